"""Secrets a service hands back once never show in repr (a log line, a traceback's locals, a debugger)."""

from __future__ import annotations

import base64

import pytest
from django.test import RequestFactory

from accounts.api.oauth import _basic_credentials, _client_auth
from tests.factories import make_api_key, make_user

pytestmark = pytest.mark.django_db


def test_a_created_api_key_keeps_its_secret_out_of_repr():
    created = make_api_key(user=make_user())
    assert created.raw_key not in repr(created)
    assert created.raw_key not in str(created)
    assert created.api_key.key_prefix in repr(created)  # still says which key it is


def test_the_token_endpoints_client_auth_keeps_the_secret_out_of_repr():
    secret = "s3cr3t-value-that-must-not-leak"
    basic = _basic_credentials("Basic " + base64.b64encode(f"svc_client:{secret}".encode()).decode())
    request = RequestFactory().post("/api/v1/auth/service/token")
    form = _client_auth(request, {"client_id": "svc_client", "client_secret": secret})
    for auth in (basic, form):
        assert auth is not None and auth.client_secret == secret
        assert secret not in repr(auth) and "svc_client" in repr(auth)
