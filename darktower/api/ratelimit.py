"""Fixed-window rate limits in Redis (key `ratelimit:{endpoint}:{identifier}:{window}`, a counter
with a TTL of one window).

Each request INCRs the counter of every limit that applies to it and sets the counter's TTL, all in one
round trip (one script); a counter above its limit answers 429 with Retry-After (the seconds left in the
window). The limits and the window are settings (RATE_LIMIT_*). A bearer token's revocation lookup rides on the same
round trip (`unless_exists`): a revoked token is refused without counting.

Login counts failed attempts only (`ratelimit_reserve`): an attempt takes a unit of every limit at once, and
only when all have one left (a refused attempt takes none); a successful login gives its unit back.

Redis unreachable: the API keeps serving (fail open) and logs a warning once per outage, because a cache outage must not
take the control plane down with it. The caller may pass `on_unavailable` to decide otherwise: login does,
and falls back to counting recent failed logins in the audit trail (see accounts.services.users).

Every refusal, by Redis or by a fallback, counts in darktower_rate_limit_rejections_total by endpoint.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache

import redis
from django.conf import settings
from redis.commands.core import Script

from darktower.errors import Throttled
from darktower.metrics import RATE_LIMIT_REJECTIONS
from darktower.redis import redis_client

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RateLimit:
    endpoint: str  # e.g. "api:meetings:create"
    identifier: str  # e.g. "user:<uuid>", "ip:<address>"; never an email or a secret
    limit: int
    window_seconds: int

    def key(self, window_start: int) -> str:
        return f"ratelimit:{self.endpoint}:{self.identifier}:{window_start}"


def ratelimit_hit(limits: Sequence[RateLimit], *, on_unavailable: Callable[[], None] | None = None,
                  unless_exists: str | None = None) -> bool | None:
    """Count one request against each limit; raise Throttled when any is exceeded.

    `unless_exists`: a Redis key whose existence refuses the request for another reason (a revoked credential),
    looked up in the same round trip: when it exists nothing is counted. Returns whether it exists (False without
    such a key; None when Redis is unreachable)."""
    if not limits and unless_exists is None:
        return False
    now = time.time()
    windows = _window_starts(limits, now)
    try:
        counts = _count(limits, windows) if unless_exists is None else _count_unless(limits, windows, unless_exists)
    except redis.RedisError as exc:
        if limits:
            _unavailable(exc, limits, on_unavailable)
        return None
    if limits:
        _outage_ended()
    if counts is None:
        return True
    throttled = _throttled(limits, windows, counts, now)
    if throttled is not None:
        raise throttled
    return False


def ratelimit_hit_many(requests: Sequence[Sequence[RateLimit]]) -> list[Throttled | None]:
    """ratelimit_hit for requests served together (a batch of registrations): each request's limits counted, all
    in one round trip; for each request, the Throttled that refuses it or None. Redis unreachable: none is limited
    (fail open), as for one request."""
    limits = [limit for request in requests for limit in request]
    if not limits:
        return [None] * len(requests)
    now = time.time()
    windows = _window_starts(limits, now)
    try:
        counts = _count(limits, windows)
    except redis.RedisError as exc:
        _unavailable(exc, limits, None)
        return [None] * len(requests)
    _outage_ended()
    outcomes: list[Throttled | None] = []
    first = 0
    for request in requests:
        last = first + len(request)
        outcomes.append(_throttled(request, windows[first:last], counts[first:last], now))
        first = last
    return outcomes


def _window_starts(limits: Sequence[RateLimit], now: float) -> list[int]:
    return [int(now // limit.window_seconds) * limit.window_seconds for limit in limits]


def _count(limits: Sequence[RateLimit], windows: Sequence[int]) -> list[int]:
    """Count one hit on each limit's counter of its window (_HIT_SCRIPT: one round trip); the counts, in order."""
    keys = [limit.key(window_start) for limit, window_start in zip(limits, windows, strict=True)]
    return [int(count) for count in _hit_script(redis_client())(
        keys=keys, args=[limit.window_seconds for limit in limits]
    )]


def _count_unless(limits: Sequence[RateLimit], windows: Sequence[int], unless_exists: str) -> list[int] | None:
    """_count, in the same one round trip, unless the key `unless_exists` exists: then None, nothing counted
    (_HIT_UNLESS_SCRIPT)."""
    keys = [limit.key(window_start) for limit, window_start in zip(limits, windows, strict=True)]
    counts = _hit_unless_script(redis_client())(
        keys=[unless_exists, *keys], args=[limit.window_seconds for limit in limits]
    )
    return None if counts == _EXISTS else [int(count) for count in counts]


def _throttled(limits: Sequence[RateLimit], windows: Sequence[int], counts: Sequence[int],
               now: float) -> Throttled | None:
    """The Throttled that refuses a request whose limits were counted at `counts` (counted in the rejection
    metric), or None when none is exceeded."""
    exceeded = [
        (limit.endpoint, window_start + limit.window_seconds - now)
        for limit, window_start, count in zip(limits, windows, counts, strict=True)
        if count > limit.limit
    ]
    if not exceeded:
        return None
    _count_rejection(sorted({endpoint for endpoint, _ in exceeded}))
    retry_after = max(seconds for _, seconds in exceeded)
    return Throttled("Too many requests; retry later.", retry_after_seconds=max(1, math.ceil(retry_after)))


# Counts one hit against every counter and sets each counter's TTL, returning the counts in the keys' order: an
# INCR and EXPIRE per limit as one command, since every API request pays for this call and encoding and parsing a
# pipeline of them cost the process more CPU than the one script. A counter named twice (one credential's limit in
# a batch of its registrations) is counted twice, in order.
# KEYS: the counters; ARGV: their TTLs.
_HIT_SCRIPT = """
local counts = {}
for i = 1, #KEYS do
  counts[i] = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[i])
end
return counts
"""


# _HIT_SCRIPT, unless the first key exists: then nothing is counted and the answer is -1 (_EXISTS). A bearer token's
# revocation lookup rides on its request's limits this way, so a revoked token costs no unit of any limit.
# KEYS: the key whose existence refuses the request, then the counters; ARGV: the counters' TTLs.
_HIT_UNLESS_SCRIPT = """
if redis.call('EXISTS', KEYS[1]) == 1 then return -1 end
local counts = {}
for i = 2, #KEYS do
  counts[i - 1] = redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[i - 1])
end
return counts
"""
_EXISTS = -1


@lru_cache(maxsize=8)
def _hit_script(client: redis.Redis) -> Script:
    """_HIT_SCRIPT bound to `client`, built once per client (its digest computed once; redis-py loads the script
    again by itself when a restarted Redis no longer has it)."""
    return client.register_script(_HIT_SCRIPT)


@lru_cache(maxsize=8)
def _hit_unless_script(client: redis.Redis) -> Script:
    """_HIT_UNLESS_SCRIPT bound to `client`, as _hit_script."""
    return client.register_script(_HIT_UNLESS_SCRIPT)


# Takes one unit of every counter, only when none is at its limit; else returns the 1-based indexes of the
# counters at their limit and takes nothing. Atomic, so concurrent attempts never get past a limit together.
# KEYS: the counters; ARGV: their limits, then their TTLs.
_RESERVE_SCRIPT = """
local n = #KEYS
local full = {}
for i = 1, n do
  if tonumber(redis.call('GET', KEYS[i]) or '0') >= tonumber(ARGV[i]) then full[#full + 1] = i end
end
if #full > 0 then return full end
for i = 1, n do
  redis.call('INCR', KEYS[i])
  redis.call('EXPIRE', KEYS[i], ARGV[n + i])
end
return full
"""

# Gives a unit back to the counters that still exist (an expired window has nothing to give back to).
_REFUND_SCRIPT = """
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then redis.call('DECR', KEYS[i]) end
end
return 0
"""


def _noop() -> None:
    return None


def ratelimit_reserve(
    limits: Sequence[RateLimit], *, on_unavailable: Callable[[], None] | None = None
) -> Callable[[], None]:
    """Take one unit of each limit for an attempt whose outcome decides whether it counts; raise Throttled
    (taking nothing) when any limit is used up. Returns the refund, to call when the attempt turns out not to
    count (a login that succeeded). With Redis unreachable, `on_unavailable` decides as for `ratelimit_hit`, and
    the refund does nothing."""
    if not limits:
        return _noop
    now = time.time()
    windows = [int(now // limit.window_seconds) * limit.window_seconds for limit in limits]
    keys = [limit.key(window_start) for limit, window_start in zip(limits, windows, strict=True)]
    arguments = [limit.limit for limit in limits] + [limit.window_seconds for limit in limits]
    try:
        full = redis_client().register_script(_RESERVE_SCRIPT)(keys=keys, args=arguments)
    except redis.RedisError as exc:
        _unavailable(exc, limits, on_unavailable)
        return _noop
    _outage_ended()
    if full:
        exceeded = [(limits[int(index) - 1], windows[int(index) - 1]) for index in full]
        _count_rejection(sorted({limit.endpoint for limit, _ in exceeded}))
        retry_after = max(window_start + limit.window_seconds - now for limit, window_start in exceeded)
        raise Throttled("Too many requests; retry later.", retry_after_seconds=max(1, math.ceil(retry_after)))

    def refund() -> None:
        try:
            redis_client().register_script(_REFUND_SCRIPT)(keys=keys)
        except redis.RedisError as exc:
            # The attempt stays counted until its window ends: one unit, not worth failing a good login for.
            _outage_began(exc, sorted({limit.endpoint for limit in limits}), "keeps a refund it could not give")

    return refund


def _unavailable(
    exc: redis.RedisError, limits: Sequence[RateLimit], on_unavailable: Callable[[], None] | None
) -> None:
    endpoints = sorted({limit.endpoint for limit in limits})
    _outage_began(exc, endpoints, "not limited" if on_unavailable is None else "uses its fallback")
    if on_unavailable is None:
        return
    try:
        on_unavailable()
    except Throttled:
        _count_rejection(endpoints)
        raise


# The Redis URLs this process found unreachable: one warning when an outage begins and one when it ends, not a
# warning per request while it lasts (a busy API would flood the log).
_unreachable: set[str] = set()
_unreachable_lock = threading.Lock()


def _outage_began(exc: redis.RedisError, endpoints: Sequence[str], consequence: str) -> None:
    with _unreachable_lock:
        first = settings.REDIS_URL not in _unreachable
        _unreachable.add(settings.REDIS_URL)
    if first:
        logger.warning(
            "rate limiter: Redis unreachable (%s); %s %s until it answers again",
            type(exc).__name__, list(endpoints), consequence,
        )


def _outage_ended() -> None:
    if not _unreachable:  # the usual case: no lock on every request
        return
    with _unreachable_lock:
        was_down = settings.REDIS_URL in _unreachable
        _unreachable.discard(settings.REDIS_URL)
    if was_down:
        logger.warning("rate limiter: Redis answers again; limits apply")


def _count_rejection(endpoints: Sequence[str]) -> None:
    """One rejected request per endpoint it was limited on (an address and an account limit on the same
    endpoint both exceeded is still one request)."""
    for endpoint in endpoints:
        RATE_LIMIT_REJECTIONS.labels(endpoint).inc()


def window_seconds() -> int:
    return settings.RATE_LIMIT_WINDOW_SECONDS


def login_limits(*, ip_address: str, email_hash: str) -> list[RateLimit]:
    """Failed logins (see `ratelimit_reserve`; a success counts nowhere), per account and address, per account
    (by the hash of the email, never the email) and per address. The account-and-address limit is the lowest:
    an attacker's failures from one address lock that address out of the account, not its owner from another;
    the account's higher limit still stops guessing spread over many addresses, and the address's limit one
    address guessing across many accounts."""
    window = window_seconds()
    return [
        RateLimit("api:auth:login", f"email-ip:{email_hash}:{ip_address}",
                  settings.RATE_LIMIT_LOGIN_PER_EMAIL_AND_IP, window),
        RateLimit("api:auth:login", f"email:{email_hash}", settings.RATE_LIMIT_LOGIN_PER_EMAIL, window),
        login_address_limit(ip_address=ip_address),
    ]


def login_address_limit(*, ip_address: str) -> RateLimit:
    """Failed logins per address, whatever the way in (a password, an identity provider's callback)."""
    return RateLimit("api:auth:login", f"ip:{ip_address}", settings.RATE_LIMIT_LOGIN_PER_IP, window_seconds())


def token_limits(*, client_id: str, ip_address: str) -> list[RateLimit]:
    """Service-token issuance, per OAuth client and per address (for the token endpoint)."""
    return [
        RateLimit("api:auth:token", f"client:{client_id}", settings.RATE_LIMIT_TOKEN_PER_CLIENT, window_seconds()),
        RateLimit("api:auth:token", f"ip:{ip_address}", settings.RATE_LIMIT_TOKEN_PER_IP, window_seconds()),
    ]


def meeting_create_limits(*, principal: str) -> list[RateLimit]:
    return [
        RateLimit("api:meetings:create", principal, settings.RATE_LIMIT_MEETING_CREATE_PER_PRINCIPAL, window_seconds())
    ]


def meeting_update_limits(*, principal: str) -> list[RateLimit]:
    """Changes of a meeting's settings, per caller: every PATCH counts, refused ones too, so that probing other
    meetings costs the same budget."""
    return [
        RateLimit("api:meetings:update", principal, settings.RATE_LIMIT_MEETING_UPDATE_PER_PRINCIPAL, window_seconds())
    ]


def api_key_create_limits(*, principal: str) -> list[RateLimit]:
    """New API keys per caller (a user token: keys cannot mint keys); the active-key cap bounds how many a
    user holds, this how fast it churns through them."""
    return [
        RateLimit("api:api-keys:create", principal, settings.RATE_LIMIT_API_KEY_CREATE_PER_PRINCIPAL, window_seconds())
    ]


def join_limits(*, principal: str | None, ip_address: str) -> list[RateLimit]:
    """Joins (and guest tokens) per caller and per address; guests have only an address."""
    limits = [RateLimit("api:meetings:join", f"ip:{ip_address}", settings.RATE_LIMIT_JOIN_PER_IP, window_seconds())]
    if principal:
        limits.append(
            RateLimit("api:meetings:join", principal, settings.RATE_LIMIT_JOIN_PER_PRINCIPAL, window_seconds())
        )
    return limits


def recording_write_limits(*, principal: str) -> list[RateLimit]:
    """Recording writes (start, update, share, unshare, rotate) per caller, one budget for all of them."""
    return [
        RateLimit(
            "api:recordings:write", principal, settings.RATE_LIMIT_RECORDING_WRITE_PER_PRINCIPAL, window_seconds()
        )
    ]


def export_limits(*, principal: str) -> list[RateLimit]:
    """Exports of a user's personal data (each a whole document, read from every app) per caller."""
    return [RateLimit("api:me:export", principal, settings.RATE_LIMIT_EXPORT_PER_PRINCIPAL, window_seconds())]


def erase_limits(*, principal: str) -> list[RateLimit]:
    """Self-erasure attempts per caller: every attempt counts, refused ones too, so that a stolen token cannot
    guess its user's password at more than this pace."""
    return [RateLimit("api:me:erase", principal, settings.RATE_LIMIT_ERASE_PER_PRINCIPAL, window_seconds())]
