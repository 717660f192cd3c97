"""GET /.well-known/jwks.json (RFC 7517): what it publishes, and that PyJWT can use it."""

from __future__ import annotations

import jwt
import pytest
from django.conf import settings

from accounts.models import SigningKey
from accounts.signing import public_jwk, signing_key_active, signing_key_rotate
from accounts.tokens import token_issue

pytestmark = pytest.mark.django_db

URL = "/.well-known/jwks.json"


def test_a_fresh_database_publishes_a_key_at_once(client):
    assert not SigningKey.objects.exists()
    response = client.get(URL)
    assert response.status_code == 200
    (key,) = response.json()["keys"]
    assert key == public_jwk(SigningKey.objects.get(is_active=True))
    assert set(key) == {"kty", "crv", "x", "kid", "alg", "use"}


def test_jwks_is_short_lived_public_json_and_needs_no_auth(client):
    response = client.get(URL)
    assert response["Content-Type"].startswith("application/json")
    cache_control = response["Cache-Control"]
    assert cache_control.startswith("public")
    max_age = int(cache_control.split("max-age=")[1])
    # Short: a verifier that cached the set still learns a rotated key quickly.
    assert 0 < max_age <= 300


def test_head_and_post(client):
    assert client.head(URL).status_code == 200
    assert client.post(URL).status_code == 405


def test_rotation_publishes_old_and_new_and_drops_keys_past_their_window(client):
    old = signing_key_active().kid
    new = signing_key_rotate().kid
    assert [key["kid"] for key in client.get(URL).json()["keys"]] == [new, old]
    SigningKey.objects.filter(kid=old).update(publish_until="2000-01-01T00:00:00Z")
    assert [key["kid"] for key in client.get(URL).json()["keys"]] == [new]


def test_pyjwt_verifies_our_tokens_from_the_published_set(client):
    issued = token_issue(subject="svc_a", audience=settings.JWT_SERVICE_AUDIENCE, scopes=["mc:register"],
                         lifetime_seconds=60)
    jwk_set = jwt.PyJWKSet.from_dict(client.get(URL).json())
    key = jwk_set[jwt.get_unverified_header(issued.token)["kid"]]
    claims = jwt.decode(issued.token, key.key, algorithms=["EdDSA"], audience=settings.JWT_SERVICE_AUDIENCE)
    assert claims["sub"] == "svc_a"
    # The published key refuses a token signed by the next key, even one naming the old kid.
    signing_key_rotate()
    later = token_issue(subject="svc_a", audience=settings.JWT_SERVICE_AUDIENCE, scopes=[], lifetime_seconds=60)
    assert jwt.get_unverified_header(later.token)["kid"] not in {k.key_id for k in jwk_set.keys}
    with pytest.raises(jwt.InvalidSignatureError):
        jwt.decode(later.token, key.key, algorithms=["EdDSA"], audience=settings.JWT_SERVICE_AUDIENCE)
