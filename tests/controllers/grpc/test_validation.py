"""Every validation edge of the gRPC API through the real server: INVALID_ARGUMENT naming the field and the rule,
nothing written, no SQL or traceback in the answer."""

from __future__ import annotations

import math

import grpc
import pytest

from controllers.heartbeats import controller_heartbeats, handler_load_reports
from controllers.models import HealthStatus, MediaHandler, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from tests.factories import make_controller, make_handler

BASE = {
    "id": "mc-v-1", "region": "us-east-1", "grpc_endpoint": "grpc://mc1.internal:50052",
    "webtransport_endpoint": "https://mc1.internal:4433", "max_meetings": 100, "max_participants": 1000,
}
MH_BASE = {
    "handler_id": "mh-v-1", "region": "us-east-1", "grpc_endpoint": "grpc://mh.internal:50053",
    "webtransport_endpoint": "https://mh.internal:4433", "max_streams": 100,
}
BAD_CHARACTERS = ["mc 1", "mc/1", "mc:1", "mc\x00", "mç-1"]
BAD_REGIONS = ["us_east", "us.east", "us east", "ús-east"]
# Percentages arrive as float32: -0.1 and 100.1 stay outside 0..100 after the conversion.
BAD_PERCENTS = [math.nan, math.inf, -math.inf, -0.1, 100.1]


def endpoint_of_length(length: int, scheme: str = "grpc") -> str:
    """A valid endpoint of exactly `length` characters: dotted 50-character labels and a port."""
    prefix, suffix = f"{scheme}://", ":50052"
    host = ".".join(["a" * 50] * 6)[: length - len(prefix) - len(suffix)]
    if host.endswith("."):
        host = host[:-1] + "a"
    assert len(prefix + host + suffix) == length
    return prefix + host + suffix


def invalid(call, request, auth) -> str:
    with pytest.raises(grpc.RpcError) as error:
        call(request, metadata=auth)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT, error.value.details()
    details = error.value.details()
    assert "Traceback" not in details and "SELECT" not in details and "INSERT" not in details
    return details


def register(stub, auth, **overrides):
    return stub.RegisterMC(pb.RegisterMCRequest(**{**BASE, **overrides}), metadata=auth)


@pytest.mark.parametrize(
    ("field", "accepted", "refused"),
    [
        ("id", ["m", "m" * 255], ["", "m" * 256, *BAD_CHARACTERS]),
        ("region", ["r", "r" * 50], ["", "r" * 51, *BAD_REGIONS]),
        (
            "grpc_endpoint",
            ["grpc://a:1", "https://10.1.2.3:443", endpoint_of_length(255)],
            ["", endpoint_of_length(256), "mc1.internal:50052", "ftp://a:1", "grpc://a", "grpc://bad_host:1",
             "grpc://-x-:1"],
        ),
        (
            "webtransport_endpoint",
            ["", "https://a:4433", endpoint_of_length(255, "https")],
            [endpoint_of_length(256, "https"), "http://a:4433", "grpc://a:4433", "https://a", "https://bad_host:1",
             "https://-x-:4433"],
        ),
        ("max_meetings", [1, 2**31 - 1], [0, 2**31, 2**32 - 1]),
        ("max_participants", [1, 2**31 - 1], [0, 2**31]),
    ],
)
def test_register_mc_edges(mc_stub, auth, field, accepted, refused):
    for number, value in enumerate(accepted):
        controller_id = f"mc-ok-{number}" if field != "id" else value
        assert register(mc_stub, auth, **{field: value, "id": controller_id}).accepted, (field, value)
    written = MeetingController.objects.count()
    for number, value in enumerate(refused):
        request = pb.RegisterMCRequest(**{**BASE, field: value, "id": f"mc-no-{number}" if field != "id" else value})
        details = invalid(mc_stub.RegisterMC, request, auth)
        assert details.startswith(f"{field}: "), (field, value, details)
    assert MeetingController.objects.count() == written == len(accepted)


def test_capacity_2_31_minus_1_is_stored_exactly(mc_stub, auth):
    register(mc_stub, auth, max_meetings=2**31 - 1, max_participants=2**31 - 1)

    controller = MeetingController.objects.get(pk="mc-v-1")
    assert (controller.max_meetings, controller.max_participants) == (2**31 - 1, 2**31 - 1)


def comprehensive(**overrides) -> pb.ComprehensiveHeartbeatRequest:
    fields = {"controller_id": "mc-v-1", "health": pb.HEALTHY, "cpu_usage_percent": 1.0, "memory_usage_percent": 1.0}
    fields.update(overrides)
    return pb.ComprehensiveHeartbeatRequest(**fields)


def capacity(**overrides) -> pb.ControllerCapacity:
    fields = {"max_meetings": 10, "current_meetings": 1, "max_participants": 100, "current_participants": 5}
    fields.update(overrides)
    return pb.ControllerCapacity(**fields)


def test_heartbeat_edges(mc_stub, auth):
    make_controller(controller_id="mc-v-1", health=HealthStatus.HEALTHY)

    for percent in BAD_PERCENTS:
        for field in ("cpu_usage_percent", "memory_usage_percent"):
            details = invalid(mc_stub.ComprehensiveHeartbeat, comprehensive(**{field: percent}), auth)
            assert details.startswith(f"{field}: "), (field, percent)
    for value in ("", "x" * 256, *BAD_CHARACTERS):
        for call, request in ((mc_stub.ComprehensiveHeartbeat, comprehensive(controller_id=value)),
                              (mc_stub.FastHeartbeat, pb.FastHeartbeatRequest(controller_id=value))):
            assert invalid(call, request, auth).startswith("controller_id: "), value
    for field, value in (("max_meetings", 2**31), ("current_participants", 2**31), ("current_meetings", 2**31),
                         ("max_participants", 2**31), ("max_meetings", 0), ("max_participants", 0)):
        for call, request in (
            (mc_stub.ComprehensiveHeartbeat, comprehensive(capacity=capacity(**{field: value}))),
            (mc_stub.FastHeartbeat, pb.FastHeartbeatRequest(controller_id="mc-v-1",
                                                            capacity=capacity(**{field: value}))),
        ):
            details = invalid(call, request, auth)
            assert details == f"capacity.{field}: must be between {1 if field.startswith('max') else 0} and 2147483647"
    # A capacity message that is present but empty is a snapshot with zero maxima, not "unchanged".
    details = invalid(mc_stub.FastHeartbeat,
                      pb.FastHeartbeatRequest(controller_id="mc-v-1", capacity=pb.ControllerCapacity()), auth)
    assert details.startswith("capacity.max_meetings: ")
    assert invalid(mc_stub.ComprehensiveHeartbeat, comprehensive(health=17), auth).startswith("health: ")
    assert MeetingController.objects.get(pk="mc-v-1").max_meetings == 100  # nothing refused was written

    # The edges themselves are accepted and stored as sent.
    top = pb.ControllerCapacity(max_meetings=2**31 - 1, current_meetings=2**31 - 1, max_participants=1,
                                current_participants=0)
    assert mc_stub.ComprehensiveHeartbeat(
        comprehensive(capacity=top, cpu_usage_percent=100.0, memory_usage_percent=0.0), metadata=auth
    ).acknowledged
    # No capacity message at all: the stored capacity stays.
    mc_stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-v-1", health=pb.DEGRADED), metadata=auth)
    controller_heartbeats.flush()
    controller = MeetingController.objects.get(pk="mc-v-1")
    assert (controller.current_meetings, controller.max_meetings, controller.max_participants,
            controller.cpu_usage_percent) == (2**31 - 1, 2**31 - 1, 1, 100.0)


def test_heartbeat_ids_of_1_and_255_characters_are_accepted(mc_stub, auth):
    for controller_id in ("m", "m" * 255):
        make_controller(controller_id=controller_id, health=HealthStatus.HEALTHY)
        assert mc_stub.FastHeartbeat(
            pb.FastHeartbeatRequest(controller_id=controller_id, health=pb.HEALTHY, capacity=capacity()), metadata=auth
        ).acknowledged
        assert mc_stub.ComprehensiveHeartbeat(comprehensive(controller_id=controller_id), metadata=auth).acknowledged
    controller_heartbeats.flush()
    assert set(MeetingController.objects.filter(max_meetings=10).values_list("pk", flat=True)) == {"m", "m" * 255}


def test_notify_meeting_ended_edges(mc_stub, auth):
    meeting_id = "7b0cf7e4-3f7e-4d0c-9d44-6c1c0f6a2b11"
    cases = [("not-a-uuid", "us-east-1", "meeting_id"), ("", "us-east-1", "meeting_id")]
    cases += [(meeting_id, region, "region") for region in ("", "r" * 51, *BAD_REGIONS)]
    for value, region, field in cases:
        request = pb.NotifyMeetingEndedRequest(meeting_id=value, region=region)
        assert invalid(mc_stub.NotifyMeetingEnded, request, auth).startswith(f"{field}: "), (value, region)


def test_register_mh_edges(mh_stub, auth):
    table = [
        ("handler_id", ["h", "h" * 255], ["", "h" * 256, *BAD_CHARACTERS]),
        ("region", ["r", "r" * 50], ["", "r" * 51, *BAD_REGIONS]),
        ("grpc_endpoint", ["grpc://a:1", endpoint_of_length(255)],
         ["", endpoint_of_length(256), "ftp://a:1", "grpc://a", "grpc://bad_host:1", "grpc://-x-:1"]),
        ("webtransport_endpoint", ["https://a:4433", endpoint_of_length(255, "https")],
         ["", endpoint_of_length(256, "https"), "grpc://a:4433", "https://bad_host:1"]),
        ("max_streams", [1, 2**31 - 1], [0, 2**31]),
    ]
    expected: set[str] = set()
    for field, accepted, refused in table:
        for number, value in enumerate(accepted):
            handler_id = value if field == "handler_id" else f"mh-{field}-{number}"
            request = pb.RegisterMHRequest(**{**MH_BASE, field: value, "handler_id": handler_id})
            assert mh_stub.RegisterMH(request, metadata=auth).accepted, (field, value)
            expected.add(handler_id)
        for number, value in enumerate(refused):
            handler_id = value if field == "handler_id" else f"mh-no-{number}"
            request = pb.RegisterMHRequest(**{**MH_BASE, field: value, "handler_id": handler_id})
            assert invalid(mh_stub.RegisterMH, request, auth).startswith(f"{field}: "), (field, value)
    assert set(MediaHandler.objects.values_list("pk", flat=True)) == expected
    assert MediaHandler.objects.get(pk="mh-max_streams-1").max_streams == 2**31 - 1


def test_load_report_edges(mh_stub, auth):
    make_handler(handler_id="mh-v-1", health=HealthStatus.HEALTHY)
    for field in ("cpu_usage_percent", "memory_usage_percent", "bandwidth_usage_percent"):
        for value in BAD_PERCENTS:
            request = pb.SendLoadReportRequest(handler_id="mh-v-1", health=pb.HEALTHY, **{field: value})
            assert invalid(mh_stub.SendLoadReport, request, auth).startswith(f"{field}: "), (field, value)
    for value in ("", "h" * 256, *BAD_CHARACTERS):
        request = pb.SendLoadReportRequest(handler_id=value)
        assert invalid(mh_stub.SendLoadReport, request, auth).startswith("handler_id: "), value
    details = invalid(mh_stub.SendLoadReport, pb.SendLoadReportRequest(handler_id="mh-v-1", current_streams=2**31),
                      auth)
    assert details == "current_streams: must be between 0 and 2147483647"

    top = pb.SendLoadReportRequest(handler_id="mh-v-1", health=pb.HEALTHY, current_streams=2**31 - 1,
                                   cpu_usage_percent=100.0, memory_usage_percent=0.0, bandwidth_usage_percent=100.0)
    assert mh_stub.SendLoadReport(top, metadata=auth).acknowledged
    handler_load_reports.flush()
    handler = MediaHandler.objects.get(pk="mh-v-1")
    assert (handler.current_streams, handler.bandwidth_usage_percent) == (2**31 - 1, 100.0)
