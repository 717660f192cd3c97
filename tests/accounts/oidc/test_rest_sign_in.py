"""Sign-in with OpenID Connect over REST, against the local provider: create, link, refuse, fail cleanly."""

from __future__ import annotations

import socket
import time
import uuid
from urllib.parse import parse_qs, urlencode, urlsplit

import jwt
import pytest
from rest_framework.test import APIClient

from accounts import oidc
from accounts.models import OAuthProvider, User
from audit.models import AuditLog, AuditResult
from tests.accounts.oidc.conftest import ADMIN_CALLBACK, API_CALLBACK, provider_settings, rest_sign_in
from tests.factories import make_user
from tests.peers.oidc import OidcPeer

pytestmark = pytest.mark.django_db


def _callback_query(path: str) -> dict[str, str]:
    return {key: values[0] for key, values in parse_qs(urlsplit(path).query).items()}


def test_providers_are_listed_with_their_start_and_callback_urls(api, peer_provider):
    response = api.get("/api/v1/auth/oidc")

    assert response.status_code == 200
    assert response.json() == [{
        "name": "peer", "display_name": "Test Peer",
        "start_url": "http://testserver/api/v1/auth/oidc/peer/start",
        "callback_url": "http://testserver/api/v1/auth/oidc/peer/callback",
    }]


def test_start_redirects_with_pkce_state_and_nonce(api, peer_provider):
    response = api.get("/api/v1/auth/oidc/peer/start")

    assert response.status_code == 302
    assert response["Cache-Control"] == "no-store"
    location = response["Location"]
    assert location.startswith(f"{peer_provider.issuer}/auth?")
    query = _callback_query(location)
    assert query["response_type"] == "code"
    assert query["code_challenge_method"] == "S256"
    assert query["redirect_uri"] == "http://testserver/api/v1/auth/oidc/peer/callback"
    assert len(query["state"]) >= 20 and len(query["nonce"]) >= 20 and query["code_challenge"]


def test_a_new_user_signs_in_and_gets_our_token(api, peer_provider, as_user):
    callback = rest_sign_in(api, login="newcomer@example.test")

    response = api.get(callback)

    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    assert body["token_type"] == "Bearer"
    user = User.objects.get(email="newcomer@example.test")
    assert user.password is None and not user.has_usable_password()
    assert user.display_name == "Test newcomer"
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["sub"] == str(user.pk)
    link = OAuthProvider.objects.get(user=user)
    assert (link.provider, link.provider_user_id) == ("peer", "newcomer@example.test")
    login = AuditLog.objects.get(event_type="user_login", actor_user_id=user.pk)
    assert login.result == AuditResult.SUCCESS
    assert login.metadata == {"method": "oidc", "provider": "peer", "door": "api"}
    assert AuditLog.objects.filter(event_type="oauth_provider_linked", actor_user_id=user.pk).count() == 1
    # The token works, and the user sees the link.
    me = as_user(user).get("/api/v1/me/providers")
    assert me.status_code == 200
    assert [(row["provider"], row["subject"]) for row in me.json()["results"]] == [("peer", "newcomer@example.test")]


def test_a_later_sign_in_finds_the_user_by_subject_even_when_the_email_changed(api, peer_provider):
    first = api.get(rest_sign_in(api, login="returning@example.test"))
    assert first.status_code == 200
    user = User.objects.get(email="returning@example.test")
    User.objects.filter(pk=user.pk).update(email="changed@example.test")

    again = api.get(rest_sign_in(api, login="returning@example.test"))

    assert again.status_code == 200
    assert jwt.decode(again.json()["access_token"], options={"verify_signature": False})["sub"] == str(user.pk)
    assert User.objects.filter(email="returning@example.test").count() == 0
    assert OAuthProvider.objects.filter(user=user).count() == 1


def test_an_existing_account_is_linked_when_the_email_is_verified(api, peer_provider):
    existing = make_user(email="linked@example.test")

    response = api.get(rest_sign_in(api, login="linked@example.test"))

    assert response.status_code == 200
    assert jwt.decode(response.json()["access_token"], options={"verify_signature": False})["sub"] == str(existing.pk)
    assert OAuthProvider.objects.get(provider="peer", provider_user_id="linked@example.test").user_id == existing.pk
    assert User.objects.filter(email="linked@example.test").count() == 1


def test_an_unverified_email_never_links_an_existing_account(api, peer_provider):
    existing = make_user(email="unverified-victim@example.test")

    response = api.get(rest_sign_in(api, login="unverified-victim@example.test"))

    assert response.status_code == 401
    assert response.json()["error"]["code"] == "unauthenticated"
    assert "not verified" in response.json()["error"]["message"]
    assert not OAuthProvider.objects.filter(user=existing).exists()
    failure = AuditLog.objects.get(event_type="user_login", result=AuditResult.FAILURE, target_id="peer")
    assert failure.error_message == "unauthenticated"
    assert failure.target_type == "oidc_provider"


def test_no_account_is_created_under_an_unverified_email(api, peer_provider):
    # An account made under an address nobody verified would be linked later into its rightful owner's verified
    # sign-in, with the stranger's link still in it.
    response = api.get(rest_sign_in(api, login="unverified-newcomer@example.test"))

    assert response.status_code == 401
    assert "not verified" in response.json()["error"]["message"]
    assert not User.objects.filter(email="unverified-newcomer@example.test").exists()
    assert not OAuthProvider.objects.exists()


def test_a_callback_with_a_state_this_browser_did_not_start_is_refused(api, peer_provider):
    callback = rest_sign_in(api, login="state@example.test")
    query = _callback_query(callback)

    wrong = api.get(f"/api/v1/auth/oidc/peer/callback?{urlencode({**query, 'state': 'forged-state-value'})}")

    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthenticated"
    assert not User.objects.filter(email="state@example.test").exists()


def test_a_callback_in_another_browser_is_refused(api, peer_provider):
    callback = rest_sign_in(api, login="other-browser@example.test")

    response = APIClient().get(callback)

    assert response.status_code == 401
    assert not User.objects.filter(email="other-browser@example.test").exists()


def test_a_callback_is_good_once(api, peer_provider):
    callback = rest_sign_in(api, login="replay@example.test")
    assert api.get(callback).status_code == 200

    assert api.get(callback).status_code == 401


def test_an_id_token_with_another_nonce_is_refused(api, peer_provider):
    callback = rest_sign_in(api, login="nonce@example.test")
    # The session's nonce no longer matches the one the provider put in the ID token.
    session = api.session
    key = next(key for key in session.keys() if key.startswith("_state_peer_"))  # noqa: SIM118 (not iterable)
    data = session[key]
    data["data"]["nonce"] = "not-the-nonce-sent"
    session[key] = data
    session.save()

    response = api.get(callback)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "The ID token from the sign-in provider is not valid."
    assert not User.objects.filter(email="nonce@example.test").exists()


def test_an_expired_id_token_is_refused(api, peer_provider, monkeypatch):
    callback = rest_sign_in(api, login="expired@example.test")
    # The provider's ID tokens live an hour; this one is checked two hours later.
    monkeypatch.setattr(oidc, "clock", lambda: time.time() + 7200)

    response = api.get(callback)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == "The ID token from the sign-in provider is not valid."
    assert not User.objects.filter(email="expired@example.test").exists()


def _fresh_address() -> str:
    # An address of its own, so that counters earlier tests (and runs) left in Redis do not matter.
    value = uuid.uuid4().int
    return f"10.{value % 250}.{(value >> 8) % 250}.{(value >> 16) % 250 + 1}"


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_provider_that_is_down_at_start_is_a_clear_503(api, settings):
    settings.OIDC_PROVIDERS = {"peer": provider_settings(f"http://127.0.0.1:{_closed_port()}")}

    response = api.get("/api/v1/auth/oidc/peer/start")

    assert response.status_code == 503
    assert response["Retry-After"] == "30"
    assert response.json()["error"] == {
        "code": "provider_unavailable", "message": "The sign-in provider Test Peer cannot be reached; retry later.",
        "fields": {},
    }


def test_a_provider_that_goes_down_before_the_callback_leaves_no_half_created_user(api, settings):
    peer = OidcPeer([API_CALLBACK, ADMIN_CALLBACK])
    try:
        settings.OIDC_PROVIDERS = {"peer": provider_settings(peer.issuer)}
        callback = rest_sign_in(api, login="down@example.test")
    finally:
        peer.stop()
    users_before = User.objects.count()

    response = api.get(callback)

    assert response.status_code == 503
    assert response.json()["error"]["code"] == "provider_unavailable"
    assert User.objects.count() == users_before
    assert not OAuthProvider.objects.exists()


def test_an_unknown_provider_is_404(api, peer_provider):
    assert api.get("/api/v1/auth/oidc/nobody/start").status_code == 404
    assert api.get("/api/v1/auth/oidc/nobody/callback?state=x&code=y").status_code == 404


def test_failed_callbacks_count_against_the_login_limit_per_address(api, peer_provider, settings):
    settings.RATE_LIMIT_LOGIN_PER_IP = 2
    address = _fresh_address()
    forged = "/api/v1/auth/oidc/peer/callback?state=forged&code=x"
    for _ in range(2):
        assert api.get(forged, REMOTE_ADDR=address).status_code == 401

    response = api.get(forged, REMOTE_ADDR=address)

    assert response.status_code == 429
    assert int(response["Retry-After"]) >= 1
    assert response.json()["error"]["code"] == "throttled"
    # The refused third attempt was never let through, so never audited.
    assert AuditLog.objects.filter(
        event_type="user_login", result=AuditResult.FAILURE, target_type="oidc_provider", ip_address=address
    ).count() == 2


def test_with_redis_down_failed_callbacks_are_counted_from_the_audit_trail(api, peer_provider, settings, tmp_path):
    settings.RATE_LIMIT_LOGIN_PER_IP = 2
    settings.REDIS_URL = f"unix://{tmp_path}/nothing-listens-here.sock"
    address = _fresh_address()
    forged = "/api/v1/auth/oidc/peer/callback?state=forged&code=x"
    for _ in range(2):
        assert api.get(forged, REMOTE_ADDR=address).status_code == 401

    response = api.get(forged, REMOTE_ADDR=address)

    assert response.status_code == 429
    assert response.json()["error"]["code"] == "throttled"


def test_a_refusal_from_the_provider_ends_the_flow(api, peer_provider):
    callback = rest_sign_in(api, login="refused@example.test")
    state = _callback_query(callback)["state"]

    refused = api.get(f"/api/v1/auth/oidc/peer/callback?{urlencode({'error': 'access_denied', 'state': state})}")

    assert refused.status_code == 401
    assert refused.json()["error"]["message"] == "The sign-in provider refused the sign-in."
    # The state was used up by the refusal: a code arriving for it afterwards is not accepted.
    assert api.get(callback).status_code == 401
    assert not User.objects.filter(email="refused@example.test").exists()
