"""The GC's calls to meeting controllers: MeetingControllerService.AssignMeetingWithMh.

An MC learns of a meeting only through this call, with the media handlers chosen for it, and refuses clients of
a meeting it was never told of; it may refuse the assignment itself (at capacity, draining, unhealthy). The
caller (meetings.services.assignment) decides what to do with each answer; this module only makes the call and
says how it went, never raising for an MC's failure: a refused, failed or timed-out call is an answer too.

Channels are kept per endpoint and reused (an HTTP/2 connection per MC, not per join), at most
MC_CHANNELS_MAX of them: the least recently used is closed when a new endpoint needs room, once no call uses
it. An endpoint is the URL the MC registered: `http://` and `grpc://` are plaintext, `https://` is TLS
verified against MC_TLS_CA_FILE (or the system's roots when unset).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit

import grpc
from django.conf import settings

from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc
from darktower.metrics import MC_ASSIGN_CALLS, MC_ASSIGN_LATENCY


class McCallOutcome(StrEnum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"
    FAILED = "failed"


class McRejection(StrEnum):
    """RejectionReason, as our metrics, audit rows and events name it."""

    AT_CAPACITY = "at_capacity"
    DRAINING = "draining"
    UNHEALTHY = "unhealthy"
    UNSPECIFIED = "unspecified"


_REJECTIONS = {
    pb.REJECTION_REASON_AT_CAPACITY: McRejection.AT_CAPACITY,
    pb.REJECTION_REASON_DRAINING: McRejection.DRAINING,
    pb.REJECTION_REASON_UNHEALTHY: McRejection.UNHEALTHY,
}


@dataclass(frozen=True)
class MediaHandlerChoice:
    handler_id: str
    webtransport_endpoint: str
    grpc_endpoint: str


@dataclass(frozen=True)
class McAnswer:
    outcome: McCallOutcome
    # For a rejection, the McRejection; for a failure, the gRPC status in lower case (deadline_exceeded,
    # unavailable, unauthenticated, ...); empty when accepted.
    reason: str
    seconds: float

    @property
    def accepted(self) -> bool:
        return self.outcome is McCallOutcome.ACCEPTED


class _Pooled:
    __slots__ = ("channel", "evicted", "stub", "users")

    def __init__(self, channel: grpc.Channel):
        self.channel = channel
        self.stub = internal_pb2_grpc.MeetingControllerServiceStub(channel)
        self.users = 0
        self.evicted = False


class McChannels:
    """Channels to MCs by endpoint, least recently used first; bounded, closed once evicted and unused."""

    def __init__(self, max_channels: int):
        self.max_channels = max_channels
        self._channels: OrderedDict[str, _Pooled] = OrderedDict()
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._channels)

    def acquire(self, endpoint: str) -> _Pooled:
        to_close: list[_Pooled] = []
        with self._lock:
            pooled = self._channels.get(endpoint)
            if pooled is None:
                pooled = _Pooled(_open_channel(endpoint))
                self._channels[endpoint] = pooled
                while len(self._channels) > self.max_channels:
                    _, evicted = self._channels.popitem(last=False)
                    evicted.evicted = True
                    if evicted.users == 0:
                        to_close.append(evicted)
            else:
                self._channels.move_to_end(endpoint)
            pooled.users += 1
        for evicted in to_close:
            evicted.channel.close()
        return pooled

    def release(self, pooled: _Pooled) -> None:
        with self._lock:
            pooled.users -= 1
            close = pooled.evicted and pooled.users == 0
        if close:
            pooled.channel.close()

    def close_all(self) -> None:
        with self._lock:
            pooled_all = list(self._channels.values())
            self._channels.clear()
        for pooled in pooled_all:
            pooled.evicted = True
            if pooled.users == 0:
                pooled.channel.close()


def _open_channel(endpoint: str) -> grpc.Channel:
    parts = urlsplit(endpoint)
    target = parts.netloc
    # One connection per MC is plenty for assignment calls; keepalive notices a dead MC between joins.
    options = [("grpc.keepalive_time_ms", 30_000), ("grpc.keepalive_timeout_ms", 10_000)]
    if parts.scheme == "https":
        root_certificates = None
        if settings.MC_TLS_CA_FILE:
            with open(settings.MC_TLS_CA_FILE, "rb") as ca_file:
                root_certificates = ca_file.read()
        return grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates), options)
    return grpc.insecure_channel(target, options)


_channels: McChannels | None = None
_channels_lock = threading.Lock()


def mc_channels() -> McChannels:
    """This process's channel pool."""
    global _channels
    with _channels_lock:
        if _channels is None:
            _channels = McChannels(settings.MC_CHANNELS_MAX)
        return _channels


def mc_assign_meeting(
    *,
    endpoint: str,
    meeting_id: uuid.UUID,
    media_handlers: Sequence[MediaHandlerChoice],
    token: str,
    requesting_gc_id: str,
    timeout_seconds: float | None = None,
    channels: McChannels | None = None,
) -> McAnswer:
    """Tell the MC at `endpoint` that it runs `meeting_id` with `media_handlers`, within `timeout_seconds`
    (MC_ASSIGN_TIMEOUT_SECONDS). Never raises for the MC's sake: every way the call can end is an McAnswer."""
    pool = channels or mc_channels()
    request = pb.AssignMeetingWithMhRequest(
        meeting_id=str(meeting_id),
        mh_assignments=[
            pb.MhAssignment(mh_id=handler.handler_id, webtransport_endpoint=handler.webtransport_endpoint,
                            grpc_endpoint=handler.grpc_endpoint)
            for handler in media_handlers
        ],
        requesting_gc_id=requesting_gc_id,
    )
    timeout = settings.MC_ASSIGN_TIMEOUT_SECONDS if timeout_seconds is None else timeout_seconds
    started = time.perf_counter()
    pooled = pool.acquire(endpoint)
    try:
        response = pooled.stub.AssignMeetingWithMh(
            request, timeout=timeout, metadata=(("authorization", f"Bearer {token}"),)
        )
    except grpc.RpcError as exc:
        code = exc.code() if isinstance(exc, grpc.Call) else grpc.StatusCode.UNKNOWN
        answer = McAnswer(McCallOutcome.FAILED, code.name.lower(), time.perf_counter() - started)
    except ValueError:
        # The channel was closed under us (close_all at shutdown): the MC was not reached.
        answer = McAnswer(McCallOutcome.FAILED, "unavailable", time.perf_counter() - started)
    else:
        if response.accepted:
            answer = McAnswer(McCallOutcome.ACCEPTED, "", time.perf_counter() - started)
        else:
            reason = _REJECTIONS.get(response.rejection_reason, McRejection.UNSPECIFIED)
            answer = McAnswer(McCallOutcome.REJECTED, str(reason), time.perf_counter() - started)
    finally:
        pool.release(pooled)
    MC_ASSIGN_CALLS.labels(str(answer.outcome), answer.reason).inc()
    MC_ASSIGN_LATENCY.labels(str(answer.outcome)).observe(answer.seconds)
    return answer
