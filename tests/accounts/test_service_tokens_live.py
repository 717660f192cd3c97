"""The token endpoint and the JWKS over real HTTP (pytest-django's live server), driven by stock clients:
Authlib's OAuth2Session (on requests) obtains tokens, PyJWT's PyJWKClient verifies them against the
published keys. Nothing of ours is on the client side."""

from __future__ import annotations

import jwt
import pytest
import requests
from authlib.integrations.base_client.errors import OAuthError
from authlib.integrations.requests_client import OAuth2Session
from django.conf import settings

from accounts.services.service_tokens import service_credential_revoke
from accounts.signing import signing_key_rotate
from accounts.tokens import token_verify
from darktower.errors import Unauthenticated

pytestmark = [
    pytest.mark.django_db(transaction=True), pytest.mark.slow, pytest.mark.usefixtures("roomy_token_rate_limits"),
]

TOKEN_PATH = "/api/v1/auth/service/token"
JWKS_PATH = "/.well-known/jwks.json"


def fetch(live_server, client_id, secret, *, method, scope=None):
    with OAuth2Session(client_id, secret, token_endpoint_auth_method=method, scope=scope) as session:
        return session.fetch_token(live_server.url + TOKEN_PATH, grant_type="client_credentials")


def verify_with_jwks(live_server, token):
    jwks = jwt.PyJWKClient(live_server.url + JWKS_PATH, cache_keys=False)
    signing_key = jwks.get_signing_key_from_jwt(token)
    return jwt.decode(token, signing_key.key, algorithms=["EdDSA"], audience=settings.JWT_SERVICE_AUDIENCE,
                      issuer=settings.JWT_ISSUER)


@pytest.mark.parametrize("method", ["client_secret_basic", "client_secret_post"])
def test_authlib_obtains_a_token_that_pyjwkclient_verifies(live_server, credential, method):
    # Both registration scopes: a token of no single kind of member, which names the service audience.
    client_id, secret = credential
    token = fetch(live_server, client_id, secret, method=method, scope="mc:register mh:register")
    assert token["token_type"] == "Bearer"
    assert token["scope"] == "mc:register mh:register"
    assert token["expires_in"] == settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS
    claims = verify_with_jwks(live_server, token["access_token"])
    assert claims["sub"] == client_id
    assert claims["scope"] == "mc:register mh:register"
    assert {"kid", "alg"} <= set(jwt.get_unverified_header(token["access_token"]))
    assert jwt.get_unverified_header(token["access_token"])["alg"] == "EdDSA"
    assert {"iss", "sub", "aud", "exp", "iat", "nbf", "jti", "scope"} <= set(claims)


@pytest.mark.parametrize(("scope", "service_type", "original"), [
    ("mc:register", "meeting-controller", "service.write.gc service.write.mh"),
    ("mh:register", "media-handler", "service.write.gc service.write.mc"),
])
def test_a_single_kind_token_is_dark_towers_and_verifies_without_an_audience(
    live_server, credential, scope, service_type, original
):
    # As Dark Tower's validator takes it: JWKS, EdDSA, exp, and no audience configured (any aud is refused).
    client_id, secret = credential
    token = fetch(live_server, client_id, secret, method="client_secret_basic", scope=scope)
    assert token["scope"] == f"{scope} {original}"
    jwks = jwt.PyJWKClient(live_server.url + JWKS_PATH, cache_keys=False)
    claims = jwt.decode(token["access_token"], jwks.get_signing_key_from_jwt(token["access_token"]).key,
                        algorithms=["EdDSA"], options={"require": ["exp"]})
    assert "aud" not in claims
    assert claims["service_type"] == service_type
    assert set(claims["scope"].split()) == {scope, *original.split()}
    assert isinstance(claims["exp"], int) and isinstance(claims["iat"], int) and claims["sub"] == client_id
    # Ours accepts it as a service token, and as nothing else.
    assert token_verify(token["access_token"], audience=settings.JWT_SERVICE_AUDIENCE).service_type == service_type
    for other in (settings.JWT_API_AUDIENCE, settings.JWT_MEETING_AUDIENCE):
        with pytest.raises(Unauthenticated, match="audience"):
            token_verify(token["access_token"], audience=other)


def test_authlib_sees_rfc_errors(live_server, credential):
    client_id, secret = credential
    with pytest.raises(OAuthError) as caught:
        fetch(live_server, client_id, secret + "x", method="client_secret_basic")
    assert caught.value.error == "invalid_client"
    with pytest.raises(OAuthError) as caught:
        fetch(live_server, client_id, secret, method="client_secret_post", scope="meetings:create")
    assert caught.value.error == "invalid_scope"


def test_revoked_credential_is_refused_over_http_and_its_tokens_die(live_server, credential):
    client_id, secret = credential
    old = fetch(live_server, client_id, secret, method="client_secret_basic")["access_token"]
    assert token_verify(old, audience=settings.JWT_SERVICE_AUDIENCE).subject == client_id
    service_credential_revoke(client_id=client_id)
    with pytest.raises(Unauthenticated, match="revoked"):
        token_verify(old, audience=settings.JWT_SERVICE_AUDIENCE)
    response = requests.post(live_server.url + TOKEN_PATH, data={"grant_type": "client_credentials"},
                             auth=(client_id, secret), timeout=10)
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_client"
    assert response.headers["WWW-Authenticate"].startswith("Basic")


def test_rotation_keeps_old_tokens_valid_and_publishes_both_keys(live_server, credential):
    client_id, secret = credential
    before = fetch(live_server, client_id, secret, method="client_secret_basic")["access_token"]
    old_kid = jwt.get_unverified_header(before)["kid"]
    new_kid = signing_key_rotate().kid
    after = fetch(live_server, client_id, secret, method="client_secret_basic")["access_token"]
    assert jwt.get_unverified_header(after)["kid"] == new_kid != old_kid

    published = requests.get(live_server.url + JWKS_PATH, timeout=10).json()
    assert {key["kid"] for key in published["keys"]} == {old_kid, new_kid}
    for token in (before, after):
        assert verify_with_jwks(live_server, token)["sub"] == client_id
        assert token_verify(token, audience=settings.JWT_SERVICE_AUDIENCE).subject == client_id


def test_jwks_over_http_is_cacheable_json(live_server, credential):
    response = requests.get(live_server.url + JWKS_PATH, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    assert "max-age=" in response.headers["Cache-Control"]
    assert "no-store" not in response.headers["Cache-Control"]
    (key,) = response.json()["keys"]
    assert key["kty"] == "OKP" and key["crv"] == "Ed25519"
    assert "d" not in key
