"""Every validation edge of issue 3 through the real server: INVALID_ARGUMENT naming the field and the rule,
nothing written, no SQL or traceback in the answer."""

from __future__ import annotations

import math

import grpc
import pytest

from controllers.models import HealthStatus, MediaHandler, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from tests.factories import make_controller

BASE = {
    "id": "mc-v-1", "region": "us-east-1", "grpc_endpoint": "grpc://mc1.internal:50052",
    "webtransport_endpoint": "https://mc1.internal:4433", "max_meetings": 100, "max_participants": 1000,
}


def register(stub, auth, **overrides):
    return stub.RegisterMC(pb.RegisterMCRequest(**{**BASE, **overrides}), metadata=auth)


def rejected(stub, auth, **overrides) -> str:
    with pytest.raises(grpc.RpcError) as error:
        register(stub, auth, **overrides)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = error.value.details()
    assert "Traceback" not in details and "SELECT" not in details and "INSERT" not in details
    return details


@pytest.mark.parametrize(
    ("field", "accepted", "refused"),
    [
        ("id", ["m", "m" * 255], ["", "m" * 256, "mc 1", "mc/1", "mc\x00"]),
        ("region", ["r", "r" * 50], ["", "r" * 51, "us_east", "us.east"]),
        ("grpc_endpoint", ["grpc://a:1", "https://10.1.2.3:443"], ["", "mc1.internal:50052", "ftp://a:1", "grpc://a"]),
        ("webtransport_endpoint", ["", "https://a:4433"], ["http://a:4433", "grpc://a:4433", "https://a"]),
        ("max_meetings", [1, 2**31 - 1], [0, 2**31, 2**32 - 1]),
        ("max_participants", [1, 2**31 - 1], [0, 2**31]),
    ],
)
def test_register_mc_edges(mc_stub, auth, field, accepted, refused):
    for number, value in enumerate(accepted):
        controller_id = f"mc-ok-{number}" if field != "id" else value
        assert register(mc_stub, auth, **{field: value, "id": controller_id}).accepted, (field, value)
    written = MeetingController.objects.count()
    for value in refused:
        details = rejected(mc_stub, auth, **{field: value, "id": "mc-refused" if field != "id" else value})
        assert details.startswith(f"{field}: "), (field, value, details)
    assert MeetingController.objects.count() == written == len(accepted)


def test_capacity_2_31_minus_1_is_stored_exactly(mc_stub, auth):
    register(mc_stub, auth, max_meetings=2**31 - 1, max_participants=2**31 - 1)

    controller = MeetingController.objects.get(pk="mc-v-1")
    assert (controller.max_meetings, controller.max_participants) == (2**31 - 1, 2**31 - 1)


def heartbeat_error(stub, auth, request):
    with pytest.raises(grpc.RpcError) as error:
        stub.ComprehensiveHeartbeat(request, metadata=auth)
    assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    return error.value.details()


def test_heartbeat_edges(mc_stub, auth):
    make_controller(controller_id="mc-v-1", health=HealthStatus.HEALTHY)

    def request(**overrides):
        fields = {"controller_id": "mc-v-1", "health": pb.HEALTHY, "cpu_usage_percent": 1.0,
                  "memory_usage_percent": 1.0}
        fields.update(overrides)
        return pb.ComprehensiveHeartbeatRequest(**fields)

    for percent in (math.nan, math.inf, -1.0, -0.5, 101.0, 100.5):
        assert heartbeat_error(mc_stub, auth, request(cpu_usage_percent=percent)).startswith("cpu_usage_percent: ")
        assert heartbeat_error(mc_stub, auth, request(memory_usage_percent=percent)).startswith(
            "memory_usage_percent: "
        )
    for value in ("", "x" * 256, "mc v 1"):
        assert heartbeat_error(mc_stub, auth, request(controller_id=value)).startswith("controller_id: ")
    for capacity in (pb.ControllerCapacity(current_meetings=2**31), pb.ControllerCapacity(max_participants=2**31)):
        assert heartbeat_error(mc_stub, auth, request(capacity=capacity)).startswith("capacity.")
    assert heartbeat_error(mc_stub, auth, request(health=17)).startswith("health: ")

    # The edges themselves are accepted and stored as sent.
    top = pb.ControllerCapacity(max_meetings=2**31 - 1, current_meetings=2**31 - 1, max_participants=1,
                                current_participants=0)
    assert mc_stub.ComprehensiveHeartbeat(
        request(capacity=top, cpu_usage_percent=100.0, memory_usage_percent=0.0), metadata=auth
    ).acknowledged
    mc_stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-v-1", health=pb.DEGRADED), metadata=auth)
    controller = MeetingController.objects.get(pk="mc-v-1")
    assert (controller.current_meetings, controller.max_meetings, controller.cpu_usage_percent) == (
        2**31 - 1, 2**31 - 1, 100.0,
    )


def test_notify_meeting_ended_edges(mc_stub, auth):
    for meeting_id, region, field in (("not-a-uuid", "us-east-1", "meeting_id"), ("", "us-east-1", "meeting_id"),
                                      ("7b0cf7e4-3f7e-4d0c-9d44-6c1c0f6a2b11", "r" * 51, "region")):
        with pytest.raises(grpc.RpcError) as error:
            mc_stub.NotifyMeetingEnded(pb.NotifyMeetingEndedRequest(meeting_id=meeting_id, region=region),
                                       metadata=auth)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith(f"{field}: ")


def test_media_handler_edges(mh_stub, auth):
    base = {"handler_id": "mh-v-1", "region": "us-east-1", "grpc_endpoint": "grpc://mh.internal:50053",
            "webtransport_endpoint": "https://mh.internal:4433", "max_streams": 2**31 - 1}
    assert mh_stub.RegisterMH(pb.RegisterMHRequest(**base), metadata=auth).accepted
    for field, value in (("handler_id", "h" * 256), ("max_streams", 2**31), ("max_streams", 0),
                         ("webtransport_endpoint", ""), ("region", "")):
        with pytest.raises(grpc.RpcError) as error:
            mh_stub.RegisterMH(pb.RegisterMHRequest(**{**base, field: value}), metadata=auth)
        assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.value.details().startswith(f"{field}: ")
    for field in ("cpu_usage_percent", "memory_usage_percent", "bandwidth_usage_percent"):
        for value in (math.nan, -1.0, 101.0):
            with pytest.raises(grpc.RpcError) as error:
                mh_stub.SendLoadReport(pb.SendLoadReportRequest(handler_id="mh-v-1", **{field: value}), metadata=auth)
            assert error.value.details().startswith(f"{field}: ")
    assert MediaHandler.objects.get().max_streams == 2**31 - 1
