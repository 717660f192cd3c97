"""JWT attacks against the REST API: each forged, stale or misdirected user token is a 401 in the API's error
shape, on a read and on a write, and the write does nothing. (tests/accounts/test_tokens.py covers the token
core itself, tests/controllers/grpc/test_auth.py the gRPC door.)"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from rest_framework.test import APIClient

from accounts.services.users import user_scopes
from accounts.signing import signing_key_active
from meetings.models import Meeting
from tests.factories import make_user
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

ME = "/api/v1/me"
MEETINGS = "/api/v1/meetings"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(user, **overrides) -> dict:
    now = int(time.time())
    claims = {"iss": settings.JWT_ISSUER, "sub": str(user.pk), "aud": settings.JWT_API_AUDIENCE, "iat": now,
              "nbf": now, "exp": now + 600, "jti": uuid.uuid4().hex, "scope": " ".join(sorted(user_scopes(user)))}
    claims.update(overrides)
    return claims


def _token(header: dict, claims: dict, sign) -> str:
    signing_input = f"{_b64(json.dumps(header).encode())}.{_b64(json.dumps(claims).encode())}"
    return f"{signing_input}.{_b64(sign(signing_input.encode()))}"


def _ours(user, **overrides) -> str:
    """Signed by our active key, exactly as login signs: valid unless `overrides` break it."""
    signer = signing_key_active()
    return _token({"alg": "EdDSA", "typ": "JWT", "kid": signer.kid}, _claims(user, **overrides),
                  signer.private_key.sign)


def _alg_none(user) -> str:
    return _token({"alg": "none", "typ": "JWT", "kid": signing_key_active().kid}, _claims(user), lambda _: b"")


def _hs256_with_the_public_key(form: str):
    """Whichever form a confused verifier would use as the HMAC secret: the raw key, its PEM, its JWK `x`."""

    def attack(user) -> str:
        signer = signing_key_active()
        public = signer.private_key.public_key()
        raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        secret = {
            "raw": raw,
            "pem": public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
            "x": _b64(raw).encode(),
        }[form]
        return _token({"alg": "HS256", "typ": "JWT", "kid": signer.kid}, _claims(user),
                      lambda data: hmac.new(secret, data, hashlib.sha256).digest())

    return attack


def _unknown_kid(user) -> str:
    return _token({"alg": "EdDSA", "typ": "JWT", "kid": "not-a-key-of-ours"}, _claims(user),
                  Ed25519PrivateKey.generate().sign)


def _foreign_key_under_our_kid(user) -> str:
    return _token({"alg": "EdDSA", "typ": "JWT", "kid": signing_key_active().kid}, _claims(user),
                  Ed25519PrivateKey.generate().sign)


def _expired(user) -> str:
    past = int(time.time()) - settings.JWT_CLOCK_SKEW_SECONDS - 60
    return _ours(user, iat=past - 600, nbf=past - 600, exp=past)


def _wrong_audience(user) -> str:
    return _ours(user, aud=settings.JWT_SERVICE_AUDIENCE)


def _nine_kib(user) -> str:
    return _ours(user, padding="p" * 9 * 1024)


def _tampered_payload(user) -> str:
    header, _, signature = _ours(user).split(".")
    forged = _claims(user, sub=str(make_user(is_staff=True).pk))  # someone else, with more scopes
    return f"{header}.{_b64(json.dumps(forged).encode())}.{signature}"


ATTACKS = {
    "alg none": _alg_none,
    "HS256 keyed with the public key (raw)": _hs256_with_the_public_key("raw"),
    "HS256 keyed with the public key (PEM)": _hs256_with_the_public_key("pem"),
    "HS256 keyed with the public key (JWK x)": _hs256_with_the_public_key("x"),
    "unknown kid": _unknown_kid,
    "a foreign key under our kid": _foreign_key_under_our_kid,
    "expired": _expired,
    "wrong audience": _wrong_audience,
    "9 KiB": _nine_kib,
    "tampered payload": _tampered_payload,
}


def _client(token: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client


def test_the_untouched_token_is_accepted():
    user = make_user()
    assert _client(_ours(user)).get(ME).status_code == 200


@pytest.mark.parametrize("attack", list(ATTACKS))
def test_every_jwt_attack_is_401_and_changes_nothing(attack):
    user = make_user()
    token = ATTACKS[attack](user)
    if attack == "9 KiB":
        assert len(token) > 9 * 1024
    client = _client(token)
    assert_error(client.get(ME), 401, "unauthenticated")
    assert_error(client.post(MEETINGS, {"display_name": "forged"}, format="json"), 401, "unauthenticated")
    assert not Meeting.objects.exists()
