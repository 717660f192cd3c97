"""Every check on the ID token refuses the sign-in, and writes nothing but the failure's audit row.

The flow runs against the local provider (discovery, state, nonce and PKCE are real); only the token endpoint's
answer is replaced, by an ID token signed with a key added to the provider's key set, so that each claim can be
wrong on its own. The signature case alters the provider's own token."""

from __future__ import annotations

import time
from typing import Any

import pytest
from authlib.integrations.django_client import DjangoOAuth2App
from joserfc import jwt
from joserfc.jwk import KeySet, RSAKey

from accounts import oidc
from accounts.models import OAuthProvider, User
from audit.models import AuditLog, AuditResult
from tests.accounts.oidc.conftest import rest_sign_in
from tests.peers.oidc import CLIENT_ID

pytestmark = pytest.mark.django_db

KEY = RSAKey.generate_key(2048, parameters={"kid": "test-added-key", "use": "sig", "alg": "RS256"}, private=True)
INVALID = "The ID token from the sign-in provider is not valid."


def _session_nonce(api) -> str:
    session = api.session
    key = next(key for key in session.keys() if key.startswith("_state_peer_"))  # noqa: SIM118 (not iterable)
    return session[key]["data"]["nonce"]


def _answer_with(monkeypatch, id_token: str) -> None:
    client = next(iter(oidc._clients.values()))
    client.server_metadata["jwks"] = {"keys": [*client.fetch_jwk_set()["keys"], KeySet([KEY]).as_dict()["keys"][0]]}

    def fetch_access_token(self: DjangoOAuth2App, **kwargs: Any) -> dict[str, Any]:
        return {"access_token": "at", "token_type": "Bearer", "expires_in": 3600, "id_token": id_token}

    monkeypatch.setattr(DjangoOAuth2App, "fetch_access_token", fetch_access_token)


def _claims(issuer: str, nonce: str, changes: dict[str, Any] | None = None) -> dict[str, Any]:
    now = int(time.time())
    claims = {"iss": issuer, "sub": "crafted", "aud": CLIENT_ID, "iat": now, "exp": now + 300, "nonce": nonce,
              "email": "crafted@example.test", "email_verified": True}
    claims.update(changes or {})
    return {name: value for name, value in claims.items() if value is not None}


@pytest.mark.parametrize(("case", "changes"), [
    ("another audience", {"aud": "another-client"}),
    ("another audience with us as azp", {"aud": ["another-client"], "azp": CLIENT_ID}),
    ("another issuer", {"iss": "https://issuer.example.test"}),
    ("another nonce", {"nonce": "not-the-nonce-sent"}),
    ("no nonce", {"nonce": None}),
    ("expired", {"exp": int(time.time()) - 3600, "iat": int(time.time()) - 7200}),
    ("issued in the future", {"iat": int(time.time()) + 3600, "exp": int(time.time()) + 7200}),
])
def test_a_wrong_claim_is_refused(api, peer_provider, monkeypatch, case, changes):
    callback = rest_sign_in(api, login="claims@example.test")
    claims = _claims(peer_provider.issuer, _session_nonce(api), changes)
    _answer_with(monkeypatch, jwt.encode({"alg": "RS256", "kid": KEY.kid}, claims, KEY))

    response = api.get(callback)

    assert response.status_code == 401, case
    assert response.json()["error"]["message"] == INVALID
    assert not User.objects.filter(email="crafted@example.test").exists()
    assert not OAuthProvider.objects.exists()
    assert AuditLog.objects.filter(event_type="user_login", result=AuditResult.FAILURE, target_id="peer").count() == 1


def test_the_crafted_token_is_accepted_when_every_claim_is_right(api, peer_provider, monkeypatch):
    # The control for the cases above: the same token with nothing changed signs in.
    callback = rest_sign_in(api, login="claims@example.test")
    claims = _claims(peer_provider.issuer, _session_nonce(api))
    _answer_with(monkeypatch, jwt.encode({"alg": "RS256", "kid": KEY.kid}, claims, KEY))

    response = api.get(callback)

    assert response.status_code == 200
    assert OAuthProvider.objects.get(provider_user_id="crafted").user.email == "crafted@example.test"


def test_a_token_whose_signature_was_altered_is_refused(api, peer_provider, monkeypatch):
    callback = rest_sign_in(api, login="signature@example.test")
    real_fetch = DjangoOAuth2App.fetch_access_token

    def altered(self: DjangoOAuth2App, **kwargs: Any) -> dict[str, Any]:
        token = real_fetch(self, **kwargs)
        header, payload, signature = token["id_token"].split(".")
        token["id_token"] = ".".join([header, payload, ("A" if signature[0] != "A" else "B") + signature[1:]])
        return token

    monkeypatch.setattr(DjangoOAuth2App, "fetch_access_token", altered)

    response = api.get(callback)

    assert response.status_code == 401
    assert response.json()["error"]["message"] == INVALID
    assert not User.objects.filter(email="signature@example.test").exists()
