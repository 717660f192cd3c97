"""A NUL character in the body of a request that carries an Idempotency-Key (found by test_schemathesis.py).

The idempotency layer stores every answer in a jsonb column, which PostgreSQL refuses for \\u0000: a 400 that
named a field "\\u0000" became a 500 there. Such a body is refused as a whole, with a 400."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import make_user, user_token

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("path", ["/api/v1/api-keys", "/api/v1/meetings"])
@pytest.mark.parametrize("body", [{"\u0000": 1}, {"display_name": "a\u0000b", "name": "a\u0000b"}])
def test_a_nul_anywhere_in_an_idempotent_request_is_a_400(path, body):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {user_token(make_user())}")
    response = client.post(path, body, format="json", HTTP_IDEMPOTENCY_KEY="nul-in-the-body")
    assert response.status_code == 400, response.content[:500]
    assert set(response.json()["error"]) == {"code", "message", "fields"}
