"""The gRPC servicers of the internal contract (proto/dark_tower/internal/v1/internal.proto).

Thin, on django-grpc-framework's Service (which closes stale database connections around each call): validate
the message (controllers.validation), call one service, build the answer. Authentication and error mapping
are the guard's (controllers.grpc.guard).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import grpc
from django.conf import settings
from django_grpc_framework.services import Service
from google.protobuf.message import Message

from controllers.grpc.batching import BatchWrite
from controllers.grpc.guard import GLOBAL_CONTROLLER_SERVICE, MEDIA_HANDLER_REGISTRY_SERVICE, current_client_id
from controllers.grpc.ratelimit import limit_many_for
from controllers.grpc.streams import BeatStream
from controllers.heartbeats import HeartbeatRecorder, controller_heartbeats, handler_load_reports, unix_now
from controllers.hooks import meeting_end_reported
from controllers.models import HealthStatus
from controllers.services.beats import Beat
from controllers.services.registration import (
    ControllerRegistration,
    HandlerRegistration,
    Registration,
    controller_register,
    controller_register_many,
    handler_register,
    handler_register_many,
)
from controllers.validation import (
    GRPC_SCHEMES,
    WEBTRANSPORT_SCHEMES,
    validate_capacity,
    validate_endpoint,
    validate_id,
    validate_percent,
    validate_region,
    validate_uuid,
)
from dark_tower.internal.v1 import internal_pb2 as pb
from darktower.errors import InvalidInput, Unauthenticated

# The wire enum's numbers (part of the contract) to our stored states.
_HEALTH: dict[int, HealthStatus] = {
    pb.PENDING: HealthStatus.PENDING,
    pb.HEALTHY: HealthStatus.HEALTHY,
    pb.DEGRADED: HealthStatus.DEGRADED,
    pb.UNHEALTHY: HealthStatus.UNHEALTHY,
    pb.DRAINING: HealthStatus.DRAINING,
}


def _health(value: int) -> str:
    # proto3 enums are open: an unknown number arrives as itself.
    if value not in _HEALTH:
        raise InvalidInput("health: must be one of PENDING, HEALTHY, DEGRADED, UNHEALTHY, DRAINING",
                           fields={"health": ["unknown value"]})
    return _HEALTH[value]


def _capacity(request: Any) -> dict[str, int | float | None]:
    """A heartbeat's capacity: absent (the message not set) means unchanged; present, it is the whole snapshot,
    so its maxima must be >= 1 like a registration's (a zero is refused, never read as "unchanged")."""
    if not request.HasField("capacity"):
        return {}
    capacity = request.capacity
    return {
        "current_meetings": validate_capacity(capacity.current_meetings, field="capacity.current_meetings"),
        "current_participants": validate_capacity(
            capacity.current_participants, field="capacity.current_participants"
        ),
        "max_meetings": validate_capacity(capacity.max_meetings, field="capacity.max_meetings", minimum=1),
        "max_participants": validate_capacity(
            capacity.max_participants, field="capacity.max_participants", minimum=1
        ),
    }


def _fast_beat(request: pb.FastHeartbeatRequest, client_id: str) -> Beat:
    return Beat(validate_id(request.controller_id, field="controller_id"), _health(request.health), _capacity(request),
                client_id=client_id)


def _comprehensive_beat(request: pb.ComprehensiveHeartbeatRequest, client_id: str) -> Beat:
    values = _capacity(request)
    values["cpu_usage_percent"] = validate_percent(request.cpu_usage_percent, field="cpu_usage_percent")
    values["memory_usage_percent"] = validate_percent(request.memory_usage_percent, field="memory_usage_percent")
    return Beat(validate_id(request.controller_id, field="controller_id"), _health(request.health), values,
                client_id=client_id)


def _load_report(request: pb.SendLoadReportRequest, client_id: str) -> Beat:
    values: dict[str, int | float | None] = {
        "current_streams": validate_capacity(request.current_streams, field="current_streams"),
        "cpu_usage_percent": validate_percent(request.cpu_usage_percent, field="cpu_usage_percent"),
        "memory_usage_percent": validate_percent(request.memory_usage_percent, field="memory_usage_percent"),
        "bandwidth_usage_percent": validate_percent(request.bandwidth_usage_percent, field="bandwidth_usage_percent"),
    }
    return Beat(validate_id(request.handler_id, field="handler_id"), _health(request.health), values,
                client_id=client_id)


def _controller_registration(request: pb.RegisterMCRequest, client_id: str) -> ControllerRegistration:
    return ControllerRegistration(
        controller_id=validate_id(request.id, field="id"),
        region=validate_region(request.region),
        grpc_endpoint=validate_endpoint(request.grpc_endpoint, field="grpc_endpoint", schemes=GRPC_SCHEMES),
        webtransport_endpoint=validate_endpoint(
            request.webtransport_endpoint, field="webtransport_endpoint", schemes=WEBTRANSPORT_SCHEMES,
            required=False,
        ),
        max_meetings=validate_capacity(request.max_meetings, field="max_meetings", minimum=1),
        max_participants=validate_capacity(request.max_participants, field="max_participants", minimum=1),
        actor_client_id=client_id,
    )


def _controller_registered(registration: Registration, client_id: str) -> pb.RegisterMCResponse:
    controller_heartbeats.remember(registration.member_id, registration.health_status, client_id)
    return pb.RegisterMCResponse(
        accepted=True,
        message="registered" if registration.created else "re-registered",
        fast_heartbeat_interval_ms=settings.FAST_HEARTBEAT_INTERVAL_MS,
        comprehensive_heartbeat_interval_ms=settings.COMPREHENSIVE_HEARTBEAT_INTERVAL_MS,
    )


def _handler_registration(request: pb.RegisterMHRequest, client_id: str) -> HandlerRegistration:
    return HandlerRegistration(
        handler_id=validate_id(request.handler_id, field="handler_id"),
        region=validate_region(request.region),
        grpc_endpoint=validate_endpoint(request.grpc_endpoint, field="grpc_endpoint", schemes=GRPC_SCHEMES),
        webtransport_endpoint=validate_endpoint(
            request.webtransport_endpoint, field="webtransport_endpoint", schemes=WEBTRANSPORT_SCHEMES
        ),
        max_streams=validate_capacity(request.max_streams, field="max_streams", minimum=1),
        actor_client_id=client_id,
    )


def _handler_registered(registration: Registration, client_id: str) -> pb.RegisterMHResponse:
    handler_load_reports.remember(registration.member_id, registration.health_status, client_id)
    return pb.RegisterMHResponse(
        accepted=True,
        message="registered" if registration.created else "re-registered",
        load_report_interval_ms=settings.MH_LOAD_REPORT_INTERVAL_MS,
    )


def _caller() -> str:
    """The calling credential's client id; the guard has authenticated every call that reaches a servicer, so a
    missing one is a bug, refused rather than served as the GC itself."""
    client_id = current_client_id()
    if client_id is None:
        raise Unauthenticated("missing bearer token")
    return client_id


class GlobalControllerService(Service):
    """dark_tower.internal.v1.GlobalControllerService: meeting controllers register, beat, end meetings.

    StreamHeartbeats has no method here: the service guard serves each beat of a stream with FastHeartbeat
    or ComprehensiveHeartbeat (BEAT_STREAMS below)."""

    def RegisterMC(self, request: pb.RegisterMCRequest, context: grpc.ServicerContext) -> pb.RegisterMCResponse:
        client_id = _caller()
        registration = controller_register(**vars(_controller_registration(request, client_id)))
        return _controller_registered(registration, client_id)

    def FastHeartbeat(
        self, request: pb.FastHeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.FastHeartbeatResponse:
        controller_heartbeats.record(_fast_beat(request, _caller()))
        return pb.FastHeartbeatResponse(acknowledged=True, timestamp=unix_now())

    def ComprehensiveHeartbeat(
        self, request: pb.ComprehensiveHeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.ComprehensiveHeartbeatResponse:
        controller_heartbeats.record(_comprehensive_beat(request, _caller()))
        return pb.ComprehensiveHeartbeatResponse(acknowledged=True, timestamp=unix_now())

    def NotifyMeetingEnded(
        self, request: pb.NotifyMeetingEndedRequest, context: grpc.ServicerContext
    ) -> pb.NotifyMeetingEndedResponse:
        meeting_end_reported(
            meeting_id=validate_uuid(request.meeting_id, field="meeting_id"),
            region=validate_region(request.region),
            actor_client_id=_caller(),
        )
        return pb.NotifyMeetingEndedResponse(acknowledged=True)


class MediaHandlerRegistryService(Service):
    """dark_tower.internal.v1.MediaHandlerRegistryService: media handlers register and report load."""

    def RegisterMH(self, request: pb.RegisterMHRequest, context: grpc.ServicerContext) -> pb.RegisterMHResponse:
        client_id = _caller()
        registration = handler_register(**vars(_handler_registration(request, client_id)))
        return _handler_registered(registration, client_id)

    def SendLoadReport(
        self, request: pb.SendLoadReportRequest, context: grpc.ServicerContext
    ) -> pb.SendLoadReportResponse:
        handler_load_reports.record(_load_report(request, _caller()))
        return pb.SendLoadReportResponse(acknowledged=True, timestamp=unix_now())


def _in_memory(
    recorder: HeartbeatRecorder, beat_of: Callable[[Any, str], Beat], answer: Callable[..., Message]
) -> Callable[[Any, str], Message | None]:
    def serve(request: Any, client_id: str) -> Message | None:
        if not recorder.record_in_memory(beat_of(request, client_id)):
            return None
        return answer(acknowledged=True, timestamp=unix_now())

    return serve


# The heartbeat methods as the event loop serves them when their call needs no I/O (the member is known and its
# state does not change): the same validation and recorder as the servicer methods above, which serve the calls
# these answer None to (a lookup, a synchronous write, a member this process does not know to be the caller's)
# in a worker thread. The second argument is the calling credential's client id.
IN_MEMORY_METHODS: dict[str, Callable[[Any, str], Message | None]] = {
    f"/{GLOBAL_CONTROLLER_SERVICE}/FastHeartbeat": _in_memory(
        controller_heartbeats, _fast_beat, pb.FastHeartbeatResponse
    ),
    f"/{GLOBAL_CONTROLLER_SERVICE}/ComprehensiveHeartbeat": _in_memory(
        controller_heartbeats, _comprehensive_beat, pb.ComprehensiveHeartbeatResponse
    ),
    f"/{MEDIA_HANDLER_REGISTRY_SERVICE}/SendLoadReport": _in_memory(
        handler_load_reports, _load_report, pb.SendLoadReportResponse
    ),
}


# The servicer the server registers (controllers.grpc.server); the stream's beats are served by its methods.
CONTROLLER_SERVICER = GlobalControllerService.as_servicer()
# StreamHeartbeats: an MC's beats on one stream, each served as the unary call of its kind would be (the same
# servicer method, rate limit and in-memory path above).
BEAT_STREAMS: dict[str, BeatStream] = {
    f"/{GLOBAL_CONTROLLER_SERVICE}/StreamHeartbeats": BeatStream(
        oneof="beat",
        beats={
            "fast": (f"/{GLOBAL_CONTROLLER_SERVICE}/FastHeartbeat", CONTROLLER_SERVICER.FastHeartbeat),
            "comprehensive": (
                f"/{GLOBAL_CONTROLLER_SERVICE}/ComprehensiveHeartbeat", CONTROLLER_SERVICER.ComprehensiveHeartbeat
            ),
        },
        member_field="controller_id",
        response=pb.HeartbeatStreamResponse,
    ),
}


def _registrations_written(
    method: str, registration_of: Callable[[Any, str], Any], register_many: Callable[..., list[Any]],
    answer: Callable[[Registration, str], Message],
) -> BatchWrite:
    """The write of a registration method's calls waiting together (controllers.grpc.batching): each call counted
    by the method's rate limit and validated as the servicer method does, the valid ones registered in one
    transaction, each answered its own outcome."""
    limit = limit_many_for(method)

    def write(calls: Sequence[tuple[Any, str]]) -> list[Any]:
        outcomes: list[Any] = list(limit(calls)) if limit is not None else [None] * len(calls)
        valid: list[tuple[int, str, Any]] = []
        for index, (request, client_id) in enumerate(calls):
            if outcomes[index] is not None:
                continue
            try:
                valid.append((index, client_id, registration_of(request, client_id)))
            except Exception as exc:  # this call's refusal; mapped by the guard
                outcomes[index] = exc
        written = register_many(registrations=[registration for _, _, registration in valid]) if valid else []
        for (index, client_id, _), outcome in zip(valid, written, strict=True):
            outcomes[index] = outcome if isinstance(outcome, Exception) else answer(outcome, client_id)
        return outcomes

    return write


def _beats_written(
    recorder: HeartbeatRecorder, beat_of: Callable[[Any, str], Beat], answer: Callable[..., Message]
) -> BatchWrite:
    """The write of a beat method's calls that need the database (a lookup, a beat that may change health), waiting
    together: validated as the servicer method does, recorded together (HeartbeatRecorder.record_many). Their rate
    limit was taken on the event loop."""

    def write(calls: Sequence[tuple[Any, str]]) -> list[Any]:
        outcomes: list[Any] = [None] * len(calls)
        valid: list[tuple[int, Beat]] = []
        for index, (request, client_id) in enumerate(calls):
            try:
                valid.append((index, beat_of(request, client_id)))
            except Exception as exc:  # this call's refusal; mapped by the guard
                outcomes[index] = exc
        recorded = recorder.record_many([beat for _, beat in valid]) if valid else []
        for (index, _), error in zip(valid, recorded, strict=True):
            outcomes[index] = error if error is not None else answer(acknowledged=True, timestamp=unix_now())
        return outcomes

    return write


# The methods whose calls that need the database, once their token is known, wait for their method's writer
# instead of a worker thread (controllers.grpc.batching): registrations, and beats that need a lookup or may change
# health (the others are answered on the loop, IN_MEMORY_METHODS).
BATCHED_METHODS: dict[str, BatchWrite] = {
    f"/{GLOBAL_CONTROLLER_SERVICE}/RegisterMC": _registrations_written(
        f"/{GLOBAL_CONTROLLER_SERVICE}/RegisterMC", _controller_registration, controller_register_many,
        _controller_registered,
    ),
    f"/{GLOBAL_CONTROLLER_SERVICE}/FastHeartbeat": _beats_written(
        controller_heartbeats, _fast_beat, pb.FastHeartbeatResponse
    ),
    f"/{GLOBAL_CONTROLLER_SERVICE}/ComprehensiveHeartbeat": _beats_written(
        controller_heartbeats, _comprehensive_beat, pb.ComprehensiveHeartbeatResponse
    ),
    f"/{MEDIA_HANDLER_REGISTRY_SERVICE}/RegisterMH": _registrations_written(
        f"/{MEDIA_HANDLER_REGISTRY_SERVICE}/RegisterMH", _handler_registration, handler_register_many,
        _handler_registered,
    ),
    f"/{MEDIA_HANDLER_REGISTRY_SERVICE}/SendLoadReport": _beats_written(
        handler_load_reports, _load_report, pb.SendLoadReportResponse
    ),
}
