"""The admin's door: the login page offers "Sign in with <provider>", and the callback opens an admin session for
active staff only, through the same service as the REST door."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest
from django.contrib.messages import get_messages
from django.test import Client

from accounts.models import OAuthProvider, User
from audit.models import AuditLog, AuditResult
from tests.accounts.oidc.conftest import TESTSERVER
from tests.factories import make_user
from tests.peers.oidc import peer_sign_in

pytestmark = pytest.mark.django_db


def _admin_sign_in(client: Client, *, login: str, next_url: str = "/admin/"):
    start = client.get("/login/oidc/peer/", {"next": next_url})
    assert start.status_code == 302, start.content
    callback = urlsplit(peer_sign_in(start["Location"], login=login, redirect_prefix=TESTSERVER))
    assert callback.path == "/login/oidc/peer/callback/"
    return client.get(f"{callback.path}?{callback.query}")


def test_the_login_page_offers_each_provider(client, peer_provider):
    page = client.get("/admin/login/?next=/admin/controllers/")

    assert page.status_code == 200
    assert b"Sign in with Test Peer" in page.content
    assert b'href="/login/oidc/peer/?next=%2Fadmin%2Fcontrollers%2F"' in page.content


def test_the_login_page_offers_nothing_without_providers(client, settings):
    settings.OIDC_PROVIDERS = {}

    page = client.get("/admin/login/")

    assert page.status_code == 200 and b"Sign in with" not in page.content


def test_staff_sign_in_through_the_provider(client, peer_provider):
    staff = make_user(email="operator@example.test", is_staff=True)

    response = _admin_sign_in(client, login="operator@example.test", next_url="/admin/accounts/user/")

    assert response.status_code == 302 and response["Location"] == "/admin/accounts/user/"
    assert client.get("/admin/").status_code == 200
    assert client.session["_auth_user_id"] == str(staff.pk)
    assert OAuthProvider.objects.get(user=staff).provider_user_id == "operator@example.test"
    login = AuditLog.objects.get(event_type="user_login", actor_user_id=staff.pk)
    assert login.metadata == {"method": "oidc", "provider": "peer", "door": "admin"}


def test_a_foreign_next_url_is_not_followed(client, peer_provider):
    make_user(email="operator2@example.test", is_staff=True)

    response = _admin_sign_in(client, login="operator2@example.test", next_url="https://evil.example/")

    assert response["Location"] == "/admin/"


def test_a_user_who_is_not_staff_gets_no_admin_session(client, peer_provider):
    make_user(email="member@example.test")

    response = _admin_sign_in(client, login="member@example.test")

    assert response.status_code == 302 and response["Location"] == "/admin/login/"
    assert "_auth_user_id" not in client.session
    assert [str(m) for m in get_messages(response.wsgi_request)] == ["Only staff may sign in to the admin."]
    # Nothing was linked either: the refusal rolled the sign-in back.
    assert not OAuthProvider.objects.exists()
    assert AuditLog.objects.get(event_type="user_login", result=AuditResult.FAILURE).error_message == (
        "permission_denied"
    )


def test_the_admin_door_creates_nobody(client, peer_provider):
    response = _admin_sign_in(client, login="stranger@example.test")

    assert response["Location"] == "/admin/login/"
    assert not User.objects.filter(email="stranger@example.test").exists()
    assert "_auth_user_id" not in client.session


def test_a_forged_callback_lands_on_the_login_page(client, peer_provider):
    response = client.get("/login/oidc/peer/callback/?state=forged&code=x")

    assert response.status_code == 302 and response["Location"] == "/admin/login/"
    page = client.get("/admin/login/")
    assert b"This sign-in was not started here, or has expired; start again." in page.content
