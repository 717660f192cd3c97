"""GET /api/v1/me/export (the user's data, streamed) and DELETE /api/v1/me (erasure, with a recent sign-in)."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from django.conf import settings
from django.urls import reverse
from rest_framework.test import APIClient

from accounts.models import User
from accounts.signing import signing_key_active
from audit.models import AuditLog
from tests.factories import make_user
from tests.fixtures.personal_data import PASSWORD, make_subject

pytestmark = pytest.mark.django_db

EXPORT = "/api/v1/me/export"
ME = "/api/v1/me"


@pytest.fixture(autouse=True)
def roomy_personal_data_limits(settings):
    settings.RATE_LIMIT_EXPORT_PER_PRINCIPAL = 100_000
    settings.RATE_LIMIT_ERASE_PER_PRINCIPAL = 100_000


def _token_issued(user: User, *, seconds_ago: int) -> str:
    """A user token as login issues it, but issued `seconds_ago` (and still valid for ten minutes)."""
    issued = datetime.now(UTC) - timedelta(seconds=seconds_ago)
    signer = signing_key_active()
    payload = {
        "iss": settings.JWT_ISSUER, "sub": str(user.pk), "aud": settings.JWT_API_AUDIENCE, "iat": issued,
        "nbf": issued, "exp": datetime.now(UTC) + timedelta(minutes=10), "jti": uuid.uuid4().hex,
        "scope": "meetings:read",
    }
    return jwt.encode(payload, signer.private_key, algorithm="EdDSA", headers={"kid": signer.kid})


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


# --- export ----------------------------------------------------------------------------------------------------


def test_the_export_streams_the_users_document(as_user):
    subject = make_subject()

    response = as_user(subject.user).get(EXPORT)

    assert response.status_code == 200
    assert response.streaming
    assert response["Content-Type"] == "application/json"
    assert response["Cache-Control"] == "no-store"
    assert "attachment" in response["Content-Disposition"]
    document = json.loads(b"".join(response.streaming_content))
    assert document["profile"]["email"] == subject.email
    assert {row["meeting_code"] for row in document["participations"]} == {
        subject.hosted.meeting_code, subject.visited.meeting_code
    }
    assert AuditLog.objects.filter(event_type="user_data_exported", actor_user_id=subject.user.pk).count() == 1


def test_the_export_is_rate_limited_per_user(as_user, settings):
    settings.RATE_LIMIT_EXPORT_PER_PRINCIPAL = 1
    user = make_user()
    client = as_user(user)

    assert client.get(EXPORT).status_code == 200
    refused = client.get(EXPORT)

    assert refused.status_code == 429
    assert int(refused["Retry-After"]) >= 1
    assert refused.json()["error"]["code"] == "throttled"
    assert as_user(make_user()).get(EXPORT).status_code == 200  # another user's budget is their own


def test_the_export_needs_a_bearer_token(api, as_key):
    user = make_user()

    assert api.get(EXPORT).status_code == 401
    assert as_key(user, ["meetings:read"]).get(EXPORT).status_code == 403


# --- erasure ---------------------------------------------------------------------------------------------------


def test_a_fresh_token_erases_the_user_and_the_token_then_fails(as_user):
    subject = make_subject()
    client = as_user(subject.user)

    response = client.delete(ME)

    assert response.status_code == 204
    assert not User.objects.filter(pk=subject.user.pk).exists()
    row = AuditLog.objects.filter(event_type="user_erased").get()
    assert (row.actor_user_id, row.target_id, row.metadata["via"]) == (None, str(subject.user.pk), "api")
    # A second erasure: the user is gone, so the token names nobody.
    assert client.delete(ME).status_code == 401


def test_an_old_token_needs_the_password(settings):
    settings.ERASURE_REAUTHENTICATION_SECONDS = 300
    user = make_user(password=PASSWORD)
    client = _client(_token_issued(user, seconds_ago=600))

    refused = client.delete(ME)
    wrong = client.delete(ME, {"password": "not-it"}, format="json")

    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    assert "recent sign-in" in refused.json()["error"]["message"]
    assert wrong.status_code == 403
    assert wrong.json()["error"]["fields"] == {"password": ["Wrong password."]}
    assert User.objects.filter(pk=user.pk).exists()
    assert not AuditLog.objects.filter(event_type="user_erased").exists()

    assert client.delete(ME, {"password": PASSWORD}, format="json").status_code == 204
    assert not User.objects.filter(pk=user.pk).exists()


def test_a_user_without_a_password_erases_with_a_recent_token(settings):
    settings.ERASURE_REAUTHENTICATION_SECONDS = 300
    user = make_user()
    User.objects.filter(pk=user.pk).update(password=None)

    assert _client(_token_issued(user, seconds_ago=600)).delete(ME).status_code == 403
    assert _client(_token_issued(user, seconds_ago=30)).delete(ME).status_code == 204
    assert not User.objects.filter(pk=user.pk).exists()


def test_an_api_key_cannot_erase_its_user(as_key):
    user = make_user()

    response = as_key(user, ["meetings:read"]).delete(ME)

    assert response.status_code == 403
    assert User.objects.filter(pk=user.pk).exists()


def test_erasure_attempts_are_rate_limited(settings):
    settings.RATE_LIMIT_ERASE_PER_PRINCIPAL = 2
    user = make_user(password=PASSWORD)
    client = _client(_token_issued(user, seconds_ago=600))

    codes = [client.delete(ME, {"password": "guess"}, format="json").status_code for _ in range(3)]
    last = client.delete(ME, {"password": PASSWORD}, format="json")

    assert codes == [403, 403, 429]
    assert last.status_code == 429 and int(last["Retry-After"]) >= 1
    assert User.objects.filter(pk=user.pk).exists()


def test_an_unknown_body_field_is_refused(as_user):
    user = make_user()

    response = as_user(user).delete(ME, {"pasword": "x"}, format="json")

    assert response.status_code == 400
    assert User.objects.filter(pk=user.pk).exists()


def test_the_routes_are_named():
    assert reverse("me") == ME
    assert reverse("me-export") == EXPORT
