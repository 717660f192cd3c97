"""Ed25519 signing keys for every JWT we issue (service, user, meeting tokens).

The private half is stored encrypted (Fernet, key derived from SIGNING_KEY_ENCRYPTION_KEY with HKDF);
the `kid` is the key's RFC 7638 JWK thumbprint. Exactly one key is active (a partial unique index
enforces it); a rotated key stays published in the JWKS until every token it signed has expired.

Processes cache the keys for SIGNING_KEY_CACHE_SECONDS so that verifying a token costs no query; an unknown
`kid` forces one reload (rate-limited), which is how a freshly rotated key reaches every process.

A compromised key is revoked (`signing_key_revoke`): it leaves the JWKS at once, and every token it signed is
refused by this process at once and by every other one within SIGNING_KEY_CACHE_SECONDS, when its key cache
reloads; a token a process verified earlier is re-checked against the key cache too (accounts.tokens), so the
bound holds for remembered tokens and open heartbeat streams alike.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

from cryptography.fernet import Fernet
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import Q
from django.db.models.functions import Coalesce, Now

from accounts.models import SigningKey
from audit.models import ActorType
from audit.services import audit_record, database_now
from darktower.errors import NotFound

# An unknown kid reloads the keys at most this often, so garbage kids cannot hammer the database.
UNKNOWN_KID_RELOAD_SECONDS = 1.0


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _fernet() -> Fernet:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"darktower-signing-keys", info=b"fernet-v1"
    ).derive(settings.SIGNING_KEY_ENCRYPTION_KEY.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def _thumbprint(public_raw: bytes) -> str:
    # RFC 7638: the required members in lexicographic order, no whitespace.
    canonical = json.dumps({"crv": "Ed25519", "kty": "OKP", "x": _b64url(public_raw)}, separators=(",", ":"))
    return _b64url(hashlib.sha256(canonical.encode()).digest())


def public_jwk(key: SigningKey) -> dict[str, str]:
    """The RFC 7517 / RFC 8037 public JWK of a signing key."""
    return {"kty": "OKP", "crv": "Ed25519", "x": _b64url(bytes(key.public_key)), "kid": key.kid,
            "alg": "EdDSA", "use": "sig"}


def _longest_token_lifetime() -> timedelta:
    return timedelta(
        seconds=max(
            settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS,
            settings.JWT_USER_TOKEN_LIFETIME_SECONDS,
            settings.JWT_MEETING_TOKEN_LIFETIME_SECONDS,
        )
        + settings.JWT_CLOCK_SKEW_SECONDS
    )


def _new_key_row() -> SigningKey:
    private = Ed25519PrivateKey.generate()
    public_raw = private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    private_raw = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return SigningKey(
        kid=_thumbprint(public_raw), public_key=public_raw,
        private_key_encrypted=_fernet().encrypt(private_raw), is_active=True,
    )


def signing_key_rotate(*, actor_user_id: uuid.UUID | None = None) -> SigningKey:
    """Retire the active key (kept published until its tokens expire) and make a new one active."""
    with transaction.atomic():
        now = database_now()
        retired = list(
            SigningKey.objects.select_for_update().filter(is_active=True).values_list("kid", flat=True)
        )
        SigningKey.objects.filter(kid__in=retired).update(
            is_active=False, retired_at=now, publish_until=now + _longest_token_lifetime()
        )
        key = _new_key_row()
        key.save(force_insert=True)
        audit_record(
            event_type="signing_key_rotated", action="rotate",
            actor_type=ActorType.USER if actor_user_id else ActorType.SYSTEM, actor_user_id=actor_user_id,
            target_type="signing_key", target_id=key.kid, metadata={"retired": retired},
        )
    _cache.invalidate()
    return key


@dataclass(frozen=True)
class SigningKeyRevoked:
    kid: str
    # The key made active in its place, when the revoked key was the active one.
    replacement_kid: str | None


def signing_key_revoke(*, kid: str, actor_user_id: uuid.UUID | None = None) -> SigningKeyRevoked:
    """End every token `kid` signed: the key stops being published now (publish_until), so no process verifies
    its tokens once its key cache has reloaded (this one at once, the others within SIGNING_KEY_CACHE_SECONDS).
    The active key is first replaced by a new one, so that signing never stops. Revoking a revoked key again
    changes nothing but is audited again, like any operator's attempt."""
    with transaction.atomic():
        key = SigningKey.objects.select_for_update().filter(kid=kid).first()
        if key is None:
            raise NotFound("No such signing key.")
        replacement = signing_key_rotate(actor_user_id=actor_user_id).kid if key.is_active else None
        now = database_now()
        SigningKey.objects.filter(kid=kid).update(
            is_active=False, retired_at=Coalesce("retired_at", now), publish_until=now
        )
        audit_record(
            event_type="signing_key_revoked", action="revoke",
            actor_type=ActorType.USER if actor_user_id else ActorType.SYSTEM, actor_user_id=actor_user_id,
            target_type="signing_key", target_id=kid, metadata={"replacement": replacement},
        )
    _cache.invalidate()
    return SigningKeyRevoked(kid=kid, replacement_kid=replacement)


def _signing_key_create_first() -> SigningKey:
    """The first key of a fresh database. Two processes racing here: the unique index lets one win."""
    try:
        with transaction.atomic():
            key = _new_key_row()
            key.save(force_insert=True)
            audit_record(event_type="signing_key_created", action="create", actor_type=ActorType.SYSTEM,
                         target_type="signing_key", target_id=key.kid)
            return key
    except IntegrityError:
        return SigningKey.objects.get(is_active=True)


def signing_keys_published() -> list[SigningKey]:
    """Keys whose public half the JWKS publishes: the active one and retired ones still within reach."""
    return list(
        SigningKey.objects.filter(Q(is_active=True) | Q(publish_until__gt=Now())).order_by("-created_at")
    )


@dataclass(frozen=True)
class ActiveSigner:
    kid: str
    private_key: Ed25519PrivateKey


class _KeyCache:
    """Per-process cache of the active private key and the published public keys, reloaded when older than
    SIGNING_KEY_CACHE_SECONDS (by `clock`, injectable for tests)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        # Until when the loaded keys may be used without a reload (by `clock`); replaced whole at each load.
        self._fresh_until = float("-inf")
        self._last_forced = float("-inf")
        self._signer: ActiveSigner | None = None
        self._public: dict[str, Ed25519PublicKey] = {}

    def invalidate(self) -> None:
        with self._lock:
            self._fresh_until = float("-inf")

    def _load(self) -> None:
        keys = signing_keys_published()
        active = next((key for key in keys if key.is_active), None) or _signing_key_create_first()
        private = Ed25519PrivateKey.from_private_bytes(_fernet().decrypt(bytes(active.private_key_encrypted)))
        public = {key.kid: Ed25519PublicKey.from_public_bytes(bytes(key.public_key)) for key in keys}
        public[active.kid] = private.public_key()
        self._signer = ActiveSigner(kid=active.kid, private_key=private)
        self._public = public
        self._fresh_until = self._clock() + settings.SIGNING_KEY_CACHE_SECONDS

    def signer(self) -> ActiveSigner:
        with self._lock:
            if self._clock() > self._fresh_until or self._signer is None:
                self._load()
            assert self._signer is not None  # _load sets it
            return self._signer

    def public_key(self, kid: str) -> Ed25519PublicKey | None:
        with self._lock:
            now = self._clock()
            if now > self._fresh_until:
                self._load()
            elif kid not in self._public and now - self._last_forced > UNKNOWN_KID_RELOAD_SECONDS:
                self._last_forced = now
                self._load()
            return self._public.get(kid)

    def published_cached(self, kid: str) -> bool | None:
        """Whether `kid` is published, decided without I/O nor the lock (a heartbeat asks at every beat): None
        when the cache is due for a reload, which only public_key may do."""
        if self._clock() > self._fresh_until:
            return None
        return kid in self._public


_cache = _KeyCache()


def signing_key_active() -> ActiveSigner:
    """The key that signs new tokens (created on first use on a fresh database)."""
    return _cache.signer()


def signing_public_key(kid: str) -> Ed25519PublicKey | None:
    """The published public key named `kid`, or None when there is no such key (or it is no longer published)."""
    return _cache.public_key(kid)


def signing_key_published_cached(kid: str) -> bool | None:
    """Whether `kid` is still published, by this process's key cache, without I/O; None when the cache must
    reload first (signing_public_key does)."""
    return _cache.published_cached(kid)


def signing_cache_clear() -> None:
    """Forget cached keys (tests that roll back a transaction holding a key; a rotation in this process)."""
    _cache.invalidate()
