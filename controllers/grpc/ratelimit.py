"""Rate limits of the gRPC API: no credential may flood the GC with registrations or beats.

Registrations (RegisterMC, RegisterMH) are rare and write a row and an audit row each: two fixed-window limits
in Redis (darktower.api.ratelimit, key `ratelimit:{endpoint}:{identifier}:{window}`), counted in one
round trip (one for all the registrations a writer takes together, limit_many_for), per RATE_LIMIT_WINDOW_SECONDS:
- per caller and member (token `sub` and the id it registers), GRPC_RATE_LIMIT_REGISTER_PER_MEMBER: a
  crash-looping MC cannot turn upserts and audit rows into a flood;
- per caller, GRPC_RATE_LIMIT_REGISTER_PER_CLIENT: how fast one credential may create rows at all. A whole
  fleet may share one credential, so this one is sized for a fleet's restarts, not for one MC.
With Redis unreachable registrations are served unlimited (fail open, with a warning): a cache outage must
not stop MCs from registering.

Heartbeats and load reports are the hot path, so their limit costs no round trip: a token bucket in this
process per caller and member, refilled at GRPC_HEARTBEAT_RATE_FACTOR times the rate the registration answer
asks for (fast plus comprehensive heartbeats for an MC, load reports for an MH) and holding at most
GRPC_HEARTBEAT_BURST beats. With several GC processes each one limits the beats that reach it. Keyed by
caller too, so that one credential can never use up the beats of a member another credential serves.

Every call counts, valid or not (each costs authentication and parsing); a refused call never reaches the
servicer. Over a limit: RESOURCE_EXHAUSTED with a short message, counted in darktower_rate_limit_rejections.
A member id that is not well formed gets no bucket or counter of its own (validation refuses the call anyway),
so junk ids cannot grow the buckets.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from django.conf import settings

from controllers.validation import id_ok
from dark_tower.internal.v1 import internal_pb2
from darktower.api.ratelimit import RateLimit, ratelimit_hit, ratelimit_hit_many
from darktower.conf import hot_setting
from darktower.errors import Throttled
from darktower.metrics import RATE_LIMIT_REJECTIONS

# Buckets kept at most; a full bucket is the same as none, so those go when the table is full.
MAX_BUCKETS = 200_000

Limit = Callable[[str, Any], None]
ManyLimit = Callable[[Sequence[tuple[Any, str]]], list[Throttled | None]]


def _method(service: str, method: str) -> str:
    return f"/{internal_pb2.DESCRIPTOR.services_by_name[service].full_name}/{method}"


def _controller_beats_per_second() -> float:
    return 1000 / hot_setting("FAST_HEARTBEAT_INTERVAL_MS") + 1000 / hot_setting("COMPREHENSIVE_HEARTBEAT_INTERVAL_MS")


def _handler_reports_per_second() -> float:
    return 1000 / hot_setting("MH_LOAD_REPORT_INTERVAL_MS")


class BeatBuckets:
    """Token buckets of this process, one per (endpoint, caller, member)."""

    def __init__(self, max_buckets: int = MAX_BUCKETS, *, clock: Callable[[], float] = time.monotonic) -> None:
        self.max_buckets = max_buckets
        self._clock = clock  # monotonic seconds; tests pass their own to move time
        self._lock = threading.Lock()
        # key -> (beats left, clock() they were counted at, time the bucket is full again)
        self._buckets: dict[tuple[str, str, str], tuple[float, float, float]] = {}

    def take(self, key: tuple[str, str, str], *, rate: float, burst: int) -> float:
        """Take one beat from the bucket of `key`: 0 when allowed, else the seconds until one is left."""
        now = self._clock()
        with self._lock:
            found = self._buckets.get(key)
            tokens = burst if found is None else min(burst, found[0] + (now - found[1]) * rate)
            if tokens < 1:
                self._buckets[key] = (tokens, now, now + (burst - tokens) / rate)
                return (1 - tokens) / rate
            if found is None and len(self._buckets) >= self.max_buckets:
                self._prune(now)
            self._buckets[key] = (tokens - 1, now, now + (burst - tokens + 1) / rate)
            return 0.0

    def _prune(self, now: float) -> None:
        self._buckets = {key: bucket for key, bucket in self._buckets.items() if bucket[2] > now}
        if len(self._buckets) > self.max_buckets * 3 // 4:
            # Mostly busy buckets: forgetting them all only lets members burst once more (fails open), and the
            # next scan waits until the table has filled up again.
            self._buckets.clear()

    def __len__(self) -> int:
        return len(self._buckets)


beat_buckets = BeatBuckets()


def _registration_limits(endpoint: str, id_field: str) -> Callable[[str, Any], list[RateLimit]]:
    def limits(subject: str, request: Any) -> list[RateLimit]:
        window = settings.RATE_LIMIT_WINDOW_SECONDS
        found = [RateLimit(endpoint, f"client:{subject}", settings.GRPC_RATE_LIMIT_REGISTER_PER_CLIENT, window)]
        member_id = getattr(request, id_field)
        if id_ok(member_id):
            found.append(RateLimit(
                endpoint, f"client:{subject}:member:{member_id}", settings.GRPC_RATE_LIMIT_REGISTER_PER_MEMBER, window
            ))
        return found

    return limits


def _registration_limit(limits: Callable[[str, Any], list[RateLimit]]) -> Limit:
    def limit(subject: str, request: Any) -> None:
        ratelimit_hit(limits(subject, request))  # counts its refusals in darktower_rate_limit_rejections itself

    return limit


def _registration_limit_many(limits: Callable[[str, Any], list[RateLimit]]) -> ManyLimit:
    def limit(calls: Sequence[tuple[Any, str]]) -> list[Throttled | None]:
        return ratelimit_hit_many([limits(subject, request) for request, subject in calls])

    return limit


def _beat_limit(endpoint: str, id_field: str, beats_per_second: Callable[[], float], message: str) -> Limit:
    rejections = RATE_LIMIT_REJECTIONS.labels(endpoint)

    def limit(subject: str, request: Any) -> None:
        member_id = getattr(request, id_field)
        if not id_ok(member_id):
            return
        wait = beat_buckets.take(
            (endpoint, subject, member_id), rate=hot_setting("GRPC_HEARTBEAT_RATE_FACTOR") * beats_per_second(),
            burst=hot_setting("GRPC_HEARTBEAT_BURST"),
        )
        if wait:
            rejections.inc()
            raise Throttled(message, retry_after_seconds=max(1, math.ceil(wait)))

    return limit


_heartbeat = _beat_limit("grpc:heartbeat", "controller_id", _controller_beats_per_second, "too many heartbeats")
_register_mc = _registration_limits("grpc:register_mc", "id")
_register_mh = _registration_limits("grpc:register_mh", "handler_id")
_LIMITS: dict[str, Limit] = {
    _method("GlobalControllerService", "RegisterMC"): _registration_limit(_register_mc),
    _method("GlobalControllerService", "FastHeartbeat"): _heartbeat,
    _method("GlobalControllerService", "ComprehensiveHeartbeat"): _heartbeat,
    _method("MediaHandlerRegistryService", "RegisterMH"): _registration_limit(_register_mh),
    _method("MediaHandlerRegistryService", "SendLoadReport"): _beat_limit(
        "grpc:load_report", "handler_id", _handler_reports_per_second, "too many load reports"
    ),
}


_MANY_LIMITS: dict[str, ManyLimit] = {
    _method("GlobalControllerService", "RegisterMC"): _registration_limit_many(_register_mc),
    _method("MediaHandlerRegistryService", "RegisterMH"): _registration_limit_many(_register_mh),
}


def limit_many_for(method: str) -> ManyLimit | None:
    """The rate limit of a registration method for calls served together ((request, the caller's token subject)
    each): their counters in one Redis round trip, for each call the Throttled that refuses it or None."""
    return _MANY_LIMITS.get(method)


def limit_for(method: str) -> Limit | None:
    """The rate limit of a full method name (`/package.Service/Method`), called with the caller's token subject
    and the request; None for a method without one (NotifyMeetingEnded: idempotent, one per ended meeting)."""
    return _LIMITS.get(method)
