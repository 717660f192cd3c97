"""Our JWTs: EdDSA (Ed25519) tokens for services (gRPC), users (REST) and meeting joins (the MC).

Every token carries `kid`, `iss`, `sub`, `iat`, `nbf`, `exp`, `jti` and `scope`, and says what kind of token it
is: user tokens in `aud`; the tokens Dark Tower's own MCs and MHs validate (service, meeting and guest tokens),
whose validator refuses any `aud`, in `service_type` or `token_type` instead (_of_kind). Verification is strict
and happens in this order, cheapest first: size (over JWT_MAX_TOKEN_BYTES is refused before any parsing), header
(`alg` must be EdDSA, `kid` a known published key), signature, registered claims (`exp` and `nbf` with
JWT_CLOCK_SKEW_SECONDS of leeway, `iss`), its kind, its life (`exp - iat` at most its kind's
JWT_*_MAX_LIFETIME_SECONDS: a key that signs a ten-year token is misused, whoever holds it), then the
revocation blacklist.

Messages of Unauthenticated are short and fixed; no token text ever reaches an exception, a log or a repr.
A verified token is remembered (by its SHA-256) until it expires, so an MC presenting the same service
token on every heartbeat pays for the signature check once; expiry, revocation and its key's publication are
still checked on every use, the last against the process's signing-key cache (a dictionary lookup, refreshed
every SIGNING_KEY_CACHE_SECONDS), so a revoked key's remembered tokens stop working within that time.

Every verification is counted in darktower_token_validations by outcome: `valid`, or the rejection's short
reason (`expired`, `revoked`, `too_large`, ...; a fixed set, the messages below).
"""

from __future__ import annotations

import hashlib
import threading
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
from django.conf import settings

from accounts.blacklist import blacklist_add, blacklist_cached, blacklist_contains, blacklist_key, blacklist_record
from accounts.signing import signing_key_active, signing_key_published_cached, signing_public_key
from darktower.conf import hot_setting
from darktower.errors import Unauthenticated
from darktower.metrics import TOKEN_VALIDATIONS, tally_count

ALGORITHM = "EdDSA"
_REQUIRED_CLAIMS = ["exp", "iat", "nbf", "iss", "sub", "jti"]
# Kinds of token Dark Tower's own services validate (jsonwebtoken's defaults, which refuse any `aud`): they carry
# no audience and name their kind instead, a meeting or guest token in `token_type`, a service token in
# `service_type` (with no `token_type`). Our other tokens name their kind in `aud`.
MEETING_TOKEN_TYPES = frozenset({"meeting", "guest"})
_VERIFIED_CACHE_MAX = 50_000


@dataclass(frozen=True)
class TokenClaims:
    subject: str
    audience: str
    scopes: frozenset[str]
    jti: str
    issued_at: datetime
    expires_at: datetime
    claims: dict[str, Any] = field(repr=False)
    # The signing key's id: a remembered token is accepted only while its key is published.
    kid: str = field(default="", compare=False)
    # A service token's service_type (meeting-controller, media-handler, global-controller), else None.
    service_type: str | None = field(default=None, compare=False)
    # expires_at as a Unix timestamp: a heartbeat stream compares it at every beat (token_current_cached).
    expires_at_unix: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "expires_at_unix", self.expires_at.timestamp())


@dataclass(frozen=True)
class IssuedToken:
    token: str = field(repr=False)
    jti: str
    expires_at: datetime
    expires_in: int
    scope: str


def token_issue(
    *,
    subject: str,
    audience: str | None,
    scopes: Iterable[str],
    lifetime_seconds: int,
    extra_claims: dict[str, Any] | None = None,
) -> IssuedToken:
    """Sign a token with the active key. `audience` None leaves out `aud`: Dark Tower's own services validate
    tokens with jsonwebtoken's defaults, which refuse any token that names an audience."""
    signer = signing_key_active()
    now = datetime.now(UTC).replace(microsecond=0)
    expires_at = now + timedelta(seconds=lifetime_seconds)
    scope = " ".join(sorted(set(scopes)))
    jti = uuid.uuid4().hex
    payload = {
        **(extra_claims or {}),
        "iss": settings.JWT_ISSUER,
        "sub": subject,
        **({"aud": audience} if audience is not None else {}),
        "iat": now,
        "nbf": now,
        "exp": expires_at,
        "jti": jti,
        "scope": scope,
    }
    token = jwt.encode(payload, signer.private_key, algorithm=ALGORITHM, headers={"kid": signer.kid, "typ": "JWT"})
    return IssuedToken(token=token, jti=jti, expires_at=expires_at, expires_in=lifetime_seconds, scope=scope)


_verified_lock = threading.Lock()
_verified: dict[tuple[bytes, str], TokenClaims] = {}
# (raw token, audience, claims) of the last token_verify_cached hit: a fleet's calls mostly carry one credential,
# and comparing the token text is cheaper than hashing it and taking the lock (bench 1). Replaced whole, never
# mutated, so a reader in another thread sees one consistent tuple.
_last_verified: tuple[str, str, TokenClaims] | None = None


def _decode(raw: str, audience: str) -> tuple[str, dict[str, Any]]:
    """(kid, payload) of a token whose header, signature and registered claims hold."""
    try:
        header = jwt.get_unverified_header(raw)
    except jwt.PyJWTError:
        raise Unauthenticated("malformed token") from None
    if header.get("alg") != ALGORITHM:
        raise Unauthenticated("token algorithm not accepted")
    kid = header.get("kid")
    if not isinstance(kid, str) or not kid:
        raise Unauthenticated("token has no key id")
    public_key = signing_public_key(kid)
    if public_key is None:
        raise Unauthenticated("unknown signing key")
    try:
        payload = jwt.decode(
            raw, public_key, algorithms=[ALGORITHM], issuer=settings.JWT_ISSUER,
            leeway=settings.JWT_CLOCK_SKEW_SECONDS, options={"require": _REQUIRED_CLAIMS, "verify_aud": False},
        )
    except jwt.ExpiredSignatureError:
        raise Unauthenticated("token expired") from None
    except jwt.ImmatureSignatureError:
        raise Unauthenticated("token not yet valid") from None
    except jwt.InvalidAudienceError:
        raise Unauthenticated("token audience not accepted") from None
    except jwt.InvalidIssuerError:
        raise Unauthenticated("token issuer not accepted") from None
    except jwt.MissingRequiredClaimError as exc:
        raise Unauthenticated(f"token lacks the {exc.claim} claim") from None
    except jwt.PyJWTError:
        raise Unauthenticated("invalid token") from None
    if not _of_kind(payload, audience):
        raise Unauthenticated("token audience not accepted")
    return kid, payload


def _of_kind(payload: dict[str, Any], audience: str) -> bool:
    """Whether the token is of the kind `audience` names: its `aud` is that audience, or it has no `aud` and is a
    service token (for JWT_SERVICE_AUDIENCE) or a meeting or guest token (for JWT_MEETING_AUDIENCE) by its type
    claims. A token of one kind is never accepted as another, with or without `aud`."""
    if "aud" in payload:
        return payload["aud"] == audience
    if audience == settings.JWT_SERVICE_AUDIENCE:
        return isinstance(payload.get("service_type"), str) and "token_type" not in payload
    if audience == settings.JWT_MEETING_AUDIENCE:
        return payload.get("token_type") in MEETING_TOKEN_TYPES and "service_type" not in payload
    return False


def _longest_life(payload: dict[str, Any], audience: str) -> int:
    """The longest exp - iat a token for `audience` may claim: its kind's maximum (a meeting token of a guest
    has its own); for an audience of no kind we issue, the longest of them."""
    if audience == settings.JWT_SERVICE_AUDIENCE:
        return settings.JWT_SERVICE_TOKEN_MAX_LIFETIME_SECONDS
    if audience == settings.JWT_API_AUDIENCE:
        return settings.JWT_USER_TOKEN_MAX_LIFETIME_SECONDS
    if audience == settings.JWT_MEETING_AUDIENCE:
        if payload.get("role") == "guest":
            return settings.JWT_GUEST_TOKEN_MAX_LIFETIME_SECONDS
        return settings.JWT_MEETING_TOKEN_MAX_LIFETIME_SECONDS
    return max(settings.JWT_SERVICE_TOKEN_MAX_LIFETIME_SECONDS, settings.JWT_USER_TOKEN_MAX_LIFETIME_SECONDS,
               settings.JWT_MEETING_TOKEN_MAX_LIFETIME_SECONDS, settings.JWT_GUEST_TOKEN_MAX_LIFETIME_SECONDS)


def _to_claims(kid: str, payload: dict[str, Any], audience: str) -> TokenClaims:
    scope = payload.get("scope", "")
    if not isinstance(scope, str) or not isinstance(payload["sub"], str) or not isinstance(payload["jti"], str):
        raise Unauthenticated("invalid token")
    # PyJWT has checked that both are numbers.
    if float(payload["exp"]) - float(payload["iat"]) > _longest_life(payload, audience):
        raise Unauthenticated("token lifetime too long")
    return TokenClaims(
        subject=payload["sub"],
        audience=audience,
        scopes=frozenset(scope.split()),
        jti=payload["jti"],
        issued_at=datetime.fromtimestamp(payload["iat"], UTC),
        expires_at=datetime.fromtimestamp(payload["exp"], UTC),
        claims=payload,
        kid=kid,
        service_type=service_type if isinstance(service_type := payload.get("service_type"), str) else None,
    )


_VALID = TOKEN_VALIDATIONS.labels("valid")


def _outcome(message: str) -> str:
    # "token expired" -> "expired", "unknown signing key" -> "unknown_signing_key"
    return message.removeprefix("token ").replace(" ", "_")


def token_verify(raw: str, *, audience: str) -> TokenClaims:
    """The claims of a valid, unrevoked token for `audience`; Unauthenticated otherwise."""
    try:
        claims = _verify(raw, audience)
    except Unauthenticated as exc:
        TOKEN_VALIDATIONS.labels(_outcome(exc.message)).inc()
        raise
    tally_count(_VALID)
    return claims


def token_verify_deferring_revocation(raw: str, *, audience: str) -> tuple[TokenClaims, str | None]:
    """token_verify, except that a revocation lookup that needs Redis is left to the caller, to be made in a round
    trip the caller makes anyway (the API's rate limits): the claims, and the Redis key whose existence means
    revoked (blacklist_key), or None when the answer was known without I/O (cached; a revoked token raises as in
    token_verify). With a key, the caller must hand what it found to token_revocation_settle before trusting the
    claims."""
    try:
        claims = _verify(raw, audience, revocation=False)
        cached = blacklist_cached(claims.jti)
        if cached:
            raise Unauthenticated("token revoked")
    except Unauthenticated as exc:
        TOKEN_VALIDATIONS.labels(_outcome(exc.message)).inc()
        raise
    if cached is None:
        return claims, blacklist_key(claims.jti)
    tally_count(_VALID)
    return claims, None


def token_revocation_settle(claims: TokenClaims, *, revoked: bool | None) -> None:
    """Finish token_verify_deferring_revocation with what the lookup of its key found (None: Redis unreachable,
    which answers "not revoked" as token_verify does): Unauthenticated when the token is revoked."""
    if blacklist_record(claims.jti, revoked):
        TOKEN_VALIDATIONS.labels(_outcome("token revoked")).inc()
        raise Unauthenticated("token revoked")
    tally_count(_VALID)


def token_revocation_check(claims: TokenClaims) -> None:
    """token_revocation_settle after looking the token up alone (blacklist_contains)."""
    if blacklist_contains(claims.jti):
        TOKEN_VALIDATIONS.labels(_outcome("token revoked")).inc()
        raise Unauthenticated("token revoked")
    tally_count(_VALID)


def _verify(raw: str, audience: str, *, revocation: bool = True) -> TokenClaims:
    if not raw or not isinstance(raw, str):
        raise Unauthenticated("missing token")
    if len(raw) > settings.JWT_MAX_TOKEN_BYTES or len(raw.encode()) > settings.JWT_MAX_TOKEN_BYTES:
        raise Unauthenticated("token too large")
    cache_key = _cache_key(raw, audience)
    with _verified_lock:
        claims = _verified.get(cache_key)
    if claims is None:
        claims = _to_claims(*_decode(raw, audience), audience)
        with _verified_lock:
            if len(_verified) >= _VERIFIED_CACHE_MAX:
                _verified.clear()
            _verified[cache_key] = claims
    elif _expired(claims):
        _forget(cache_key)
        raise Unauthenticated("token expired")
    elif signing_public_key(claims.kid) is None:
        _forget(cache_key)
        raise Unauthenticated("unknown signing key")
    if revocation and blacklist_contains(claims.jti):
        raise Unauthenticated("token revoked")
    return claims


def _forget(cache_key: tuple[bytes, str]) -> None:
    global _last_verified
    with _verified_lock:
        _verified.pop(cache_key, None)
        _last_verified = None


def _cache_key(raw: str, audience: str) -> tuple[bytes, str]:
    return hashlib.sha256(raw.encode()).digest(), audience


def _expired(claims: TokenClaims) -> bool:
    """Past its expiry by more than the clock skew allowed (a float comparison: streams check it at every beat)."""
    return time.time() > claims.expires_at_unix + hot_setting("JWT_CLOCK_SKEW_SECONDS")


def token_verify_cached(raw: str, *, audience: str) -> TokenClaims | None:
    """The claims token_verify would return, when finding them needs no I/O: the token was verified by this
    process, has not expired, and its revocation lookup is cached as "not revoked". None in every other case,
    including every refusal: then token_verify must decide (it may read signing keys or ask Redis), so an event
    loop calls this and hands the None cases to a worker thread."""
    global _last_verified
    if not raw or len(raw) > hot_setting("JWT_MAX_TOKEN_BYTES"):
        return None
    last = _last_verified
    claims: TokenClaims | None
    if last is not None and last[0] == raw and last[1] == audience:
        claims = last[2]
    else:
        key = _cache_key(raw, audience)
        with _verified_lock:
            claims = _verified.get(key)
        if claims is None:
            return None
        _last_verified = (raw, audience, claims)
    return claims if token_current_cached(claims) else None


def token_current_cached(claims: TokenClaims) -> bool:
    """Whether the claims of a token verified earlier still hold, decided without I/O: not expired, its signing
    key still published by the process's key cache, and its revocation lookup cached as "not revoked". False
    when that needs I/O too: then token_verify decides. A heartbeat stream checks its token with this at every
    beat, instead of verifying it again."""
    if _expired(claims):
        return False
    if signing_key_published_cached(claims.kid) is not True:
        return False
    if blacklist_cached(claims.jti) is not False:
        return False
    tally_count(_VALID)
    return True


def token_revoke(claims: TokenClaims, *, reason: str = "revoked") -> None:
    """Refuse this token from now on, until it would have expired anyway."""
    remaining = claims.expires_at - datetime.now(UTC)
    ttl = int(remaining.total_seconds()) + settings.JWT_CLOCK_SKEW_SECONDS + 1
    blacklist_add(jti=claims.jti, ttl_seconds=ttl, reason=reason)


def token_cache_clear() -> None:
    """Forget verified tokens (tests that change keys or settings under a running process)."""
    global _last_verified
    with _verified_lock:
        _verified.clear()
        _last_verified = None
