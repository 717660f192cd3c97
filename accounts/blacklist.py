"""Revoked tokens: Redis key `token:blacklist:{jti}` holding the reason, with a TTL that
ends when the token would have expired anyway.

The jti is the token's identity (random, unique, not secret), so the key never holds token text. Lookups
are cached in-process for LOOKUP_CACHE_SECONDS to keep Redis off the heartbeat path: a revocation takes
effect everywhere within that time. When Redis is unreachable a lookup answers "not revoked" and logs a
warning: tokens are short-lived (an hour by default) and the control plane must keep serving its fleet
through a Redis outage; revocation writes, by contrast, raise.
"""

from __future__ import annotations

import logging
import threading
import time

import redis

from darktower.redis import redis_client

logger = logging.getLogger(__name__)

LOOKUP_CACHE_SECONDS = 2.0
_LOOKUP_CACHE_MAX = 100_000


def blacklist_key(jti: str) -> str:
    """The Redis key whose existence says that the token `jti` is revoked (for a caller that looks it up in a
    round trip of its own making, then hands the answer to blacklist_record)."""
    return f"token:blacklist:{jti}"


_lock = threading.Lock()
_lookups: dict[str, tuple[float, bool]] = {}


def blacklist_add(*, jti: str, ttl_seconds: int, reason: str) -> None:
    redis_client().set(blacklist_key(jti), reason, ex=max(1, ttl_seconds))
    with _lock:
        _lookups[jti] = (time.monotonic(), True)


def blacklist_contains(jti: str) -> bool:
    now = time.monotonic()
    with _lock:
        cached = _lookups.get(jti)
    if cached and (cached[1] or now - cached[0] < LOOKUP_CACHE_SECONDS):
        return cached[1]
    try:
        revoked = bool(redis_client().exists(blacklist_key(jti)))
    except redis.RedisError:
        revoked = None
    return blacklist_record(jti, revoked, looked_up_at=now)


def blacklist_record(jti: str, revoked: bool | None, *, looked_up_at: float | None = None) -> bool:
    """What a lookup of blacklist_key(jti) found, cached as blacklist_contains caches its own: whether the token is
    revoked. None (Redis unreachable) answers "not revoked", with a warning, and caches nothing."""
    if revoked is None:
        logger.warning("token_blacklist_unreachable", extra={"event": "token_blacklist_unreachable"})
        return False
    with _lock:
        if len(_lookups) >= _LOOKUP_CACHE_MAX:
            _lookups.clear()
        _lookups[jti] = (time.monotonic() if looked_up_at is None else looked_up_at, revoked)
    return revoked


def blacklist_cached(jti: str) -> bool | None:
    """What blacklist_contains would answer without asking Redis: None when the cached answer is missing or old."""
    with _lock:
        cached = _lookups.get(jti)
    if cached and (cached[1] or time.monotonic() - cached[0] < LOOKUP_CACHE_SECONDS):
        return cached[1]
    return None


def blacklist_cache_clear() -> None:
    with _lock:
        _lookups.clear()
