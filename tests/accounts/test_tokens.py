"""The token core (accounts.tokens): every way a forged, stale or misdirected token must be refused.

Tokens are built here by hand (header, claims, signature) so each test changes exactly one thing from a
token that verifies."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from django.conf import settings

from accounts import blacklist
from accounts.blacklist import blacklist_cache_clear
from accounts.models import SigningKey
from accounts.signing import signing_cache_clear, signing_key_active, signing_key_rotate
from accounts.tokens import (
    token_cache_clear,
    token_current_cached,
    token_issue,
    token_revoke,
    token_verify,
    token_verify_cached,
)
from darktower.errors import Unauthenticated
from darktower.redis import redis_client

pytestmark = pytest.mark.django_db

AUD = "darktower-internal"


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def claims(**overrides):
    now = int(time.time())
    base = {"iss": settings.JWT_ISSUER, "sub": "svc_test", "aud": AUD, "iat": now, "nbf": now, "exp": now + 600,
            "jti": uuid.uuid4().hex, "scope": "mc:register"}
    base.update(overrides)
    return {key: value for key, value in base.items() if value is not None}


def signed(payload=None, *, headers=None, key=None):
    """An EdDSA token from the active key (or `key`), with header fields overridden by `headers`."""
    signer = signing_key_active()
    header = {"kid": signer.kid, **(headers or {})}
    return jwt.encode(payload or claims(), key or signer.private_key, algorithm="EdDSA", headers=header)


def raw_token(header: dict, payload: dict, signature: bytes = b"") -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(signature)}"


def eddsa(header: dict, payload: dict) -> str:
    """Signed by the active key, whatever the header says (PyJWT refuses to build some of these)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(signing_key_active().private_key.sign(signing_input.encode()))}"


def hs256(header: dict, payload: dict, secret: bytes) -> str:
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(payload).encode())}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), hashlib.sha256).digest())}"


def refused(token: str, reason: str, *, audience: str = AUD) -> Unauthenticated:
    with pytest.raises(Unauthenticated) as caught:
        token_verify(token, audience=audience)
    error = caught.value
    assert reason in error.message
    # No token text, nor any of its parts, in what an exception shows.
    for shown in (str(error), repr(error), error.message, repr(error.args), str(error.fields)):
        assert token not in shown
        for part in token.split("."):
            assert len(part) < 8 or part not in shown
    return error


def test_a_good_token_verifies():
    result = token_verify(signed(), audience=AUD)
    assert result.subject == "svc_test"
    assert result.scopes == {"mc:register"}


def test_issued_token_round_trips_and_repr_hides_it():
    issued = token_issue(subject="svc_x", audience=AUD, scopes=["mh:register", "mc:register"], lifetime_seconds=60)
    verified = token_verify(issued.token, audience=AUD)
    assert verified.jti == issued.jti
    assert verified.scopes == {"mc:register", "mh:register"}
    assert issued.token not in repr(issued)
    assert issued.token not in repr(verified)
    header = jwt.get_unverified_header(issued.token)
    assert header["alg"] == "EdDSA" and header["kid"] == signing_key_active().kid


def test_alg_none_is_refused():
    kid = signing_key_active().kid
    refused(raw_token({"alg": "none", "kid": kid, "typ": "JWT"}, claims()), "algorithm")
    refused(raw_token({"alg": "None", "kid": kid}, claims()), "algorithm")


def test_hs256_signed_with_the_public_key_is_refused():
    key = SigningKey.objects.get(kid=signing_key_active().kid)
    public_raw = bytes(key.public_key)
    public_pem = signing_key_active().private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    jwk_x = b64(public_raw).encode()
    for secret in (public_raw, public_pem, jwk_x):
        refused(hs256({"alg": "HS256", "kid": key.kid, "typ": "JWT"}, claims(), secret), "algorithm")


def test_rs256_is_refused():
    rsa = generate_private_key(public_exponent=65537, key_size=2048)
    token = jwt.encode(claims(), rsa, algorithm="RS256", headers={"kid": signing_key_active().kid})
    refused(token, "algorithm")


def test_an_eddsa_token_signed_by_a_foreign_key_under_our_kid_is_refused():
    refused(signed(key=Ed25519PrivateKey.generate()), "invalid token")


def test_missing_or_empty_kid_is_refused():
    refused(eddsa({"alg": "EdDSA", "typ": "JWT"}, claims()), "key id")
    refused(eddsa({"alg": "EdDSA", "kid": ""}, claims()), "key id")


@pytest.mark.parametrize("kid", [0, ["x"], {"kid": "x"}, None])
def test_a_kid_that_is_not_a_string_is_refused(kid):
    refused(eddsa({"alg": "EdDSA", "kid": kid}, claims()), "")


def test_the_hand_signed_control_token_verifies():
    # The helper above builds valid tokens; only the kid makes the tests above fail.
    assert token_verify(eddsa({"alg": "EdDSA", "kid": signing_key_active().kid}, claims()), audience=AUD)


def test_unknown_kid_is_refused():
    refused(signed(headers={"kid": "not-a-published-key"}), "unknown signing key")


def test_a_key_no_longer_published_is_refused():
    token = signed()
    kid = signing_key_active().kid
    signing_key_rotate()
    assert token_verify(token, audience=AUD).subject == "svc_test"  # retired but published: still valid
    SigningKey.objects.filter(kid=kid).update(publish_until="2000-01-01T00:00:00Z")
    signing_cache_clear()
    token_cache_clear()
    refused(token, "unknown signing key")


def test_expired_beyond_skew_is_refused_within_skew_accepted():
    skew = settings.JWT_CLOCK_SKEW_SECONDS
    now = int(time.time())
    refused(signed(claims(iat=now - 3600, nbf=now - 3600, exp=now - skew - 5)), "expired")
    assert token_verify(signed(claims(iat=now - 3600, nbf=now - 3600, exp=now - skew + 5)), audience=AUD)


def test_not_yet_valid_beyond_skew_is_refused_within_skew_accepted():
    skew = settings.JWT_CLOCK_SKEW_SECONDS
    now = int(time.time())
    refused(signed(claims(iat=now, nbf=now + skew + 10)), "not yet valid")
    assert token_verify(signed(claims(iat=now, nbf=now + skew - 5)), audience=AUD)


def test_the_skew_setting_is_honoured(settings):
    settings.JWT_CLOCK_SKEW_SECONDS = 0
    now = int(time.time())
    refused(signed(claims(iat=now - 100, nbf=now - 100, exp=now - 3)), "expired")


def test_wrong_issuer_is_refused():
    refused(signed(claims(iss="someone-else")), "issuer")


@pytest.mark.parametrize("audience", ["darktower-api", "darktower-mc", "", "DARKTOWER-INTERNAL"])
def test_wrong_audience_is_refused(audience):
    refused(signed(claims(aud=audience)), "audience" if audience else "")


def test_a_token_for_one_audience_is_refused_for_another():
    refused(signed(), "audience", audience=settings.JWT_API_AUDIENCE)


@pytest.mark.parametrize("missing", ["exp", "iss", "aud", "sub", "jti", "nbf", "iat"])
def test_a_missing_registered_claim_is_refused(missing):
    payload = claims()
    del payload[missing]
    refused(signed(payload), "")


def test_a_token_over_8_kib_is_refused_before_parsing():
    # Garbage that is not even a JWT: refused for its size, not as malformed, so the size check ran first.
    refused("a" * (9 * 1024), "too large")
    # Even a correctly signed token is refused once it is over the limit.
    big = signed(claims(padding="x" * (9 * 1024)))
    assert len(big) > settings.JWT_MAX_TOKEN_BYTES
    refused(big, "too large")
    # Multi-byte characters count by bytes.
    refused("\u00e9" * (settings.JWT_MAX_TOKEN_BYTES // 2 + 1), "too large")


def test_a_token_just_under_the_limit_still_verifies():
    base = len(signed(claims(padding="")))
    # base64url grows 4/3: pick padding so the whole token stays within the limit.
    padding = "x" * ((settings.JWT_MAX_TOKEN_BYTES - base) * 3 // 4 - 8)
    token = signed(claims(padding=padding))
    assert settings.JWT_MAX_TOKEN_BYTES - 16 < len(token) <= settings.JWT_MAX_TOKEN_BYTES
    assert token_verify(token, audience=AUD).subject == "svc_test"


def test_a_tampered_payload_is_refused():
    header, payload, signature = signed().split(".")
    forged = json.loads(base64.urlsafe_b64decode(payload + "=="))
    forged["scope"] = "mc:register mh:register"
    refused(f"{header}.{b64(json.dumps(forged).encode())}.{signature}", "invalid token")


def test_a_tampered_signature_is_refused():
    header, payload, signature = signed().split(".")
    flipped = bytearray(base64.urlsafe_b64decode(signature + "=="))
    flipped[0] ^= 1
    refused(f"{header}.{payload}.{b64(bytes(flipped))}", "invalid token")


@pytest.mark.parametrize("garbage", ["", "abc", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9.e30"])
def test_malformed_tokens_are_refused(garbage):
    with pytest.raises(Unauthenticated):
        token_verify(garbage, audience=AUD)


def test_a_revoked_jti_is_refused_here_and_in_other_processes():
    token = signed()
    verified = token_verify(token, audience=AUD)
    token_revoke(verified)
    refused(token, "revoked")
    # Another process knows only what Redis knows: forget this process's caches.
    token_cache_clear()
    blacklist_cache_clear()
    refused(token, "revoked")
    key = f"token:blacklist:{verified.jti}"
    ttl = redis_client().ttl(key)
    lifetime = (verified.expires_at.timestamp() - time.time()) + settings.JWT_CLOCK_SKEW_SECONDS
    assert lifetime - 5 <= ttl <= lifetime + 5
    assert token.encode() not in (redis_client().get(key) or b"")


def test_revoking_one_token_leaves_others_valid():
    first, second = signed(), signed()
    token_revoke(token_verify(first, audience=AUD))
    assert token_verify(second, audience=AUD).subject == "svc_test"


# --- token_verify_cached: the event loop's check, which must never do I/O and never accept more than token_verify


def test_cached_verification_knows_only_tokens_this_process_verified():
    token = signed()
    assert token_verify_cached(token, audience=AUD) is None

    verified = token_verify(token, audience=AUD)

    cached = token_verify_cached(token, audience=AUD)
    assert cached is not None and cached.jti == verified.jti and cached.subject == "svc_test"
    assert token_verify_cached(token, audience="another-audience") is None


def test_cached_verification_defers_once_the_revocation_lookup_is_old(monkeypatch):
    token = signed()
    token_verify(token, audience=AUD)
    assert token_verify_cached(token, audience=AUD) is not None

    # Older than LOOKUP_CACHE_SECONDS: only Redis may say whether it was revoked since.
    monkeypatch.setattr(blacklist, "LOOKUP_CACHE_SECONDS", 0.0)

    assert token_verify_cached(token, audience=AUD) is None


def test_cached_verification_never_accepts_a_revoked_token():
    token = signed()
    token_revoke(token_verify(token, audience=AUD))

    assert token_verify_cached(token, audience=AUD) is None
    refused(token, "revoked")


def test_cached_verification_never_accepts_an_expired_token(settings):
    # Expired 5 s ago but within the allowed skew; shrinking the skew below 5 s is the clock moving past expiry.
    settings.JWT_CLOCK_SKEW_SECONDS = 60
    now = int(time.time())
    token = signed(claims(iat=now - 100, nbf=now - 100, exp=now - 5))
    token_verify(token, audience=AUD)
    assert token_verify_cached(token, audience=AUD) is not None

    settings.JWT_CLOCK_SKEW_SECONDS = 4

    assert token_verify_cached(token, audience=AUD) is None
    refused(token, "expired")


def test_the_last_cached_hit_answers_only_for_its_own_token_and_audience():
    first, second = signed(), signed()
    first_jti, second_jti = token_verify(first, audience=AUD).jti, token_verify(second, audience=AUD).jti

    # Alternating tokens: each hit replaces the remembered one, and none answers with the other's claims.
    for _ in range(2):
        assert token_verify_cached(first, audience=AUD).jti == first_jti
        assert token_verify_cached(first, audience=AUD).jti == first_jti
        assert token_verify_cached(second, audience=AUD).jti == second_jti
    assert token_verify_cached(second, audience="another-audience") is None
    assert token_verify_cached(second + "x", audience=AUD) is None


def test_the_last_cached_hit_is_still_checked_for_revocation_and_forgotten_with_the_cache():
    token = signed()
    verified = token_verify(token, audience=AUD)
    assert token_verify_cached(token, audience=AUD) is not None  # remembered as the last hit

    token_revoke(verified)
    assert token_verify_cached(token, audience=AUD) is None

    other = signed()
    token_verify(other, audience=AUD)
    assert token_verify_cached(other, audience=AUD) is not None
    token_cache_clear()
    assert token_verify_cached(other, audience=AUD) is None


@pytest.mark.parametrize("raw", ["", "x" * 8193])
def test_cached_verification_defers_empty_and_oversized_tokens(raw):
    assert token_verify_cached(raw, audience=AUD) is None


# --- token_current_cached: a heartbeat stream's check of the claims it was opened with, at every beat


def test_current_claims_stay_current_until_revoked_or_their_lookup_ages(monkeypatch):
    token = signed()
    verified = token_verify(token, audience=AUD)
    assert token_current_cached(verified)

    monkeypatch.setattr(blacklist, "LOOKUP_CACHE_SECONDS", 0.0)
    assert not token_current_cached(verified)  # Redis must say whether it was revoked since
    monkeypatch.undo()

    token_revoke(verified)
    assert not token_current_cached(verified)
    blacklist_cache_clear()
    assert not token_current_cached(verified)
    refused(token, "revoked")


def test_current_claims_allow_the_clock_skew_past_expiry_and_no_more(settings):
    settings.JWT_CLOCK_SKEW_SECONDS = 60
    now = int(time.time())
    verified = token_verify(signed(claims(iat=now - 100, nbf=now - 100, exp=now - 5)), audience=AUD)
    assert verified.expires_at_unix == now - 5
    assert token_current_cached(verified)  # 5 s past expiry, within the skew

    settings.JWT_CLOCK_SKEW_SECONDS = 4

    assert not token_current_cached(verified)


def test_current_claims_expire_with_their_token(settings):
    # Verified while within the skew; with no skew left, the clock is past the token's expiry.
    settings.JWT_CLOCK_SKEW_SECONDS = 30
    now = int(time.time())
    token = signed(claims(iat=now - 10, nbf=now - 10, exp=now - 2))
    verified = token_verify(token, audience=AUD)
    assert token_current_cached(verified)

    settings.JWT_CLOCK_SKEW_SECONDS = 0

    assert not token_current_cached(verified)
    refused(token, "expired")


def test_a_cached_token_is_refused_once_its_key_is_no_longer_published():
    token = signed()
    kid = signing_key_active().kid
    signing_key_rotate()
    assert token_verify(token, audience=AUD).subject == "svc_test"
    assert token_verify_cached(token, audience=AUD) is not None
    SigningKey.objects.filter(kid=kid).update(publish_until="2000-01-01T00:00:00Z")
    signing_cache_clear()  # this process's key cache reloads (every SIGNING_KEY_CACHE_SECONDS at the latest)

    # The verified-token memo does not outlive the key's publication.
    assert token_verify_cached(token, audience=AUD) is None
    refused(token, "unknown signing key")
    assert token_verify_cached(token, audience=AUD) is None


def test_current_claims_need_their_key_still_published():
    token = signed()
    kid = signing_key_active().kid
    verified = token_verify(token, audience=AUD)
    assert token_current_cached(verified)
    signing_key_rotate()
    SigningKey.objects.filter(kid=kid).update(publish_until="2000-01-01T00:00:00Z")
    signing_cache_clear()

    assert not token_current_cached(verified)


@pytest.mark.parametrize(
    ("audience_setting", "lifetime_setting"),
    [("JWT_SERVICE_AUDIENCE", "JWT_SERVICE_TOKEN_MAX_LIFETIME_SECONDS"),
     ("JWT_API_AUDIENCE", "JWT_USER_TOKEN_MAX_LIFETIME_SECONDS"),
     ("JWT_MEETING_AUDIENCE", "JWT_MEETING_TOKEN_MAX_LIFETIME_SECONDS")],
)
def test_a_token_living_longer_than_its_kind_allows_is_refused(audience_setting, lifetime_setting):
    audience, longest = getattr(settings, audience_setting), getattr(settings, lifetime_setting)
    now = int(time.time())
    at_most = signed(claims(aud=audience, iat=now, nbf=now, exp=now + longest))
    assert token_verify(at_most, audience=audience).audience == audience
    refused(signed(claims(aud=audience, iat=now, nbf=now, exp=now + longest + 1)), "lifetime", audience=audience)
    ten_years = signed(claims(aud=audience, iat=now, nbf=now, exp=now + 10 * 365 * 86400))
    refused(ten_years, "lifetime", audience=audience)
    assert token_verify_cached(ten_years, audience=audience) is None


def test_the_maxima_default_to_the_lifetimes_tokens_are_issued_with():
    assert settings.JWT_SERVICE_TOKEN_MAX_LIFETIME_SECONDS == settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS == 3600
    assert settings.JWT_USER_TOKEN_MAX_LIFETIME_SECONDS == settings.JWT_USER_TOKEN_LIFETIME_SECONDS == 3600
    assert settings.JWT_MEETING_TOKEN_MAX_LIFETIME_SECONDS == settings.JWT_MEETING_TOKEN_LIFETIME_SECONDS == 300
    assert settings.JWT_GUEST_TOKEN_MAX_LIFETIME_SECONDS == settings.JWT_MEETING_TOKEN_LIFETIME_SECONDS


def test_a_guest_meeting_token_has_its_own_maximum(settings):
    settings.JWT_GUEST_TOKEN_MAX_LIFETIME_SECONDS = 100
    audience = settings.JWT_MEETING_AUDIENCE
    now = int(time.time())
    lifetime = {"iat": now, "nbf": now, "exp": now + 200}
    host = signed(claims(aud=audience, role="host", **lifetime))
    assert token_verify(host, audience=audience).claims["role"] == "host"
    refused(signed(claims(aud=audience, role="guest", **lifetime)), "lifetime", audience=audience)


def test_issued_tokens_of_every_kind_verify_at_the_default_lifetimes():
    for audience, lifetime in ((settings.JWT_SERVICE_AUDIENCE, settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS),
                               (settings.JWT_API_AUDIENCE, settings.JWT_USER_TOKEN_LIFETIME_SECONDS),
                               (settings.JWT_MEETING_AUDIENCE, settings.JWT_MEETING_TOKEN_LIFETIME_SECONDS)):
        issued = token_issue(subject="s", audience=audience, scopes=[], lifetime_seconds=lifetime,
                             extra_claims={"role": "guest"})
        assert token_verify(issued.token, audience=audience).jti == issued.jti
