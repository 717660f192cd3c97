"""Login, logout, /me and the two credential schemes (Bearer user tokens, ApiKey keys)."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings

from accounts.models import User
from accounts.services.users import REGULAR_USER_SCOPES, STAFF_SCOPES, email_hash
from accounts.tokens import token_issue, token_verify
from audit.models import AuditLog
from tests.factories import make_user, user_token
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/auth/login"
LOGOUT = "/api/v1/auth/logout"
ME = "/api/v1/me"


def login(api, email, password="correct-horse-battery", **extra):
    return api.post(LOGIN, {"email": email, "password": password}, format="json", **extra)


def test_login_issues_an_eddsa_user_token_and_records_the_login(api):
    user = make_user(email="alice@example.test")
    assert user.last_login is None
    response = login(api, "Alice@Example.test")
    assert response.status_code == 200, response.content
    body = response.json()
    assert set(body) == {"access_token", "token_type", "expires_in", "scope"}
    assert body["token_type"] == "Bearer"
    assert body["expires_in"] == settings.JWT_USER_TOKEN_LIFETIME_SECONDS
    assert response["Cache-Control"] == "no-store"
    claims = token_verify(body["access_token"], audience="darktower-api")
    assert claims.subject == str(user.pk)
    assert claims.scopes == REGULAR_USER_SCOPES
    assert set(body["scope"].split()) == REGULAR_USER_SCOPES
    user.refresh_from_db()
    assert user.last_login is not None
    row = AuditLog.objects.get(event_type="user_login", result="success")
    assert row.target_id == email_hash("alice@example.test")
    assert "alice" not in str(row.metadata) and "alice" not in (row.target_id or "")


def test_operator_tokens_carry_the_controller_scopes(api, operator):
    body = login(api, operator.email).json()
    assert set(body["scope"].split()) == STAFF_SCOPES
    # Staff alone grants no fleet scope: the operator groups' permissions do, as in the admin.
    make_user(email="staff@example.test", is_staff=True)
    assert set(login(api, "staff@example.test").json()["scope"].split()) == REGULAR_USER_SCOPES


@pytest.mark.parametrize("case", ["wrong-password", "unknown-email", "inactive"])
def test_failed_logins_all_answer_the_same_401_and_are_audited(api, case):
    make_user(email="bob@example.test", is_active=case != "inactive")
    email = "nobody@example.test" if case == "unknown-email" else "bob@example.test"
    password = "wrong" if case == "wrong-password" else "correct-horse-battery"
    error = assert_error(login(api, email, password), 401, "unauthenticated")
    assert error["message"] == "Invalid email or password."
    failure = AuditLog.objects.get(event_type="user_login", result="failure")
    assert failure.target_id == email_hash(email)
    assert User.objects.get(email="bob@example.test").last_login is None


def test_login_body_is_validated(api):
    error = assert_error(api.post(LOGIN, {"email": "not-an-email", "password": 5}, format="json"), 400, "invalid")
    assert set(error["fields"]) == {"email", "password"}
    error = assert_error(api.post(LOGIN, {"email": "a@b.test"}, format="json"), 400, "invalid")
    assert set(error["fields"]) == {"password"}


def test_me_answers_for_a_token_and_for_a_key(as_user, as_key, host):
    body = as_user(host).get(ME).json()
    assert body["user_id"] == str(host.pk)
    assert body["authenticated_by"] == "user"
    assert set(body["scopes"]) == REGULAR_USER_SCOPES
    body = as_key(host, ["meetings:read"]).get(ME).json()
    assert body["authenticated_by"] == "api_key"
    assert body["scopes"] == ["meetings:read"]


def test_no_credentials_is_401_naming_both_schemes(api):
    error = assert_error(api.get(ME), 401, "unauthenticated")
    assert "token" in error["message"] or "key" in error["message"]
    response = api.get(ME)
    assert "Bearer" in response["WWW-Authenticate"] and "ApiKey" in response["WWW-Authenticate"]


@pytest.mark.parametrize(
    "header",
    [
        "Bearer not-a-jwt",
        "Bearer ",
        "Bearer " + "a" * 9000,
        "ApiKey dt_deadbeef_nope",
        "ApiKey nonsense",
        "ApiKey " + "dt_" + "x" * 500,
    ],
)
def test_bad_credentials_are_401_never_anonymous(api, header):
    api.credentials(HTTP_AUTHORIZATION=header)
    assert_error(api.get(ME), 401, "unauthenticated")


def test_tokens_for_another_audience_or_unknown_users_are_refused(api, host):
    mc_token = token_issue(
        subject=str(host.pk), audience=settings.JWT_MEETING_AUDIENCE, scopes=["meetings:read"], lifetime_seconds=60
    ).token
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {mc_token}")
    assert_error(api.get(ME), 401, "unauthenticated")
    ghost = token_issue(
        subject=str(uuid.uuid4()), audience=settings.JWT_API_AUDIENCE, scopes=["meetings:read"], lifetime_seconds=60
    ).token
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {ghost}")
    assert_error(api.get(ME), 401, "unauthenticated")
    not_a_uuid = token_issue(
        subject="service:mc-1", audience=settings.JWT_API_AUDIENCE, scopes=["meetings:read"], lifetime_seconds=60
    ).token
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {not_a_uuid}")
    assert_error(api.get(ME), 401, "unauthenticated")


def test_a_deactivated_user_loses_access_at_once(as_user, host):
    client = as_user(host)
    assert client.get(ME).status_code == 200
    User.objects.filter(pk=host.pk).update(is_active=False)
    assert_error(client.get(ME), 401, "unauthenticated")


def test_scopes_are_capped_by_the_users_current_role(api, operator):
    former_operator = operator
    token = user_token(former_operator)  # issued while staff: carries controllers:read
    User.objects.filter(pk=former_operator.pk).update(is_staff=False)
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert set(api.get(ME).json()["scopes"]) == REGULAR_USER_SCOPES
    assert_error(api.get("/api/v1/controllers"), 403, "permission_denied")


def test_logout_revokes_the_token(api, host):
    token = login(api, host.email).json()["access_token"]
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    assert api.get(ME).status_code == 200
    response = api.post(LOGOUT)
    assert response.status_code == 204
    assert AuditLog.objects.filter(event_type="user_logout", actor_user_id=host.pk).count() == 1
    assert_error(api.get(ME), 401, "unauthenticated")
    assert_error(api.post(LOGOUT), 401, "unauthenticated")


def test_logout_refuses_api_keys_and_bodies(as_key, as_user, host):
    assert_error(as_key(host, ["meetings:read"]).post(LOGOUT), 403, "permission_denied")
    assert_error(as_user(host).post(LOGOUT, {"all": True}, format="json"), 400, "invalid")


def test_logout_during_a_redis_outage_is_503_not_500(as_user, host, settings, tmp_path):
    client = as_user(host)
    settings.REDIS_URL = f"unix://{tmp_path}/closed.sock"
    response = client.post(LOGOUT)
    assert_error(response, 503, "service_unavailable")
    assert int(response["Retry-After"]) >= 1
