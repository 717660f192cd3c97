"""What the event loop answers by itself and what waits for a worker thread (controllers.grpc.guard).

A heartbeat that needs no I/O (a token this process verified, a known member, no state change) is answered on
the loop, so heartbeats keep flowing while every worker is busy with registrations or a slow database; a beat
that changes state is committed by a worker before its answer, whatever the loop could do.
"""

from __future__ import annotations

import grpc
import pytest
import uvloop

from controllers.heartbeats import controller_heartbeats
from controllers.models import HealthStatus, HealthTransition, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from tests.controllers.grpc.conftest import bearer, endpoint_token, every_worker_busy

pytestmark = pytest.mark.usefixtures("fresh_revocation_lookups")


def register_request(controller_id: str) -> pb.RegisterMCRequest:
    return pb.RegisterMCRequest(id=controller_id, region="us-east-1", grpc_endpoint="grpc://mc:1", max_meetings=10,
                                max_participants=100)


def beat(controller_id: str, *, health: int = pb.HEALTHY, current: int = 3) -> pb.FastHeartbeatRequest:
    return pb.FastHeartbeatRequest(controller_id=controller_id, health=health, capacity=pb.ControllerCapacity(
        max_meetings=10, current_meetings=current, max_participants=100, current_participants=current * 10))


@pytest.fixture
def healthy_mc(mc_stub, auth) -> str:
    """A registered MC that the server knows as healthy, and a token it has verified."""
    mc_stub.RegisterMC(register_request("mc-loop-1"), metadata=auth, timeout=10)
    MeetingController.objects.filter(controller_id="mc-loop-1").update(health_status=HealthStatus.HEALTHY)
    controller_heartbeats.remember("mc-loop-1", HealthStatus.HEALTHY)
    return "mc-loop-1"


def test_the_loop_is_uvloop_and_answers_heartbeats(grpc_server, mc_stub, auth, healthy_mc):
    # The server's event loop is uvloop's (controllers.grpc.server says why): an asyncio default loop answers
    # just as well, only with more CPU per call, which no functional test would notice.
    assert isinstance(grpc_server._loop, uvloop.Loop)
    assert mc_stub.FastHeartbeat(beat(healthy_mc), metadata=auth, timeout=5).acknowledged


def test_steady_heartbeats_are_answered_while_every_worker_is_busy(grpc_server, mc_stub, auth, healthy_mc):
    with every_worker_busy(grpc_server):
        answer = mc_stub.FastHeartbeat(beat(healthy_mc, current=7), metadata=auth, timeout=5)
        assert answer.acknowledged
        # A registration needs the database, so a worker, and none is free.
        with pytest.raises(grpc.RpcError) as waited:
            mc_stub.RegisterMC(register_request("mc-loop-2"), metadata=auth, timeout=0.5)
        assert waited.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED

    controller_heartbeats.flush()
    assert MeetingController.objects.get(controller_id=healthy_mc).current_meetings == 7


def test_a_state_change_is_committed_by_a_worker_before_its_answer(grpc_server, mc_stub, auth, healthy_mc):
    with every_worker_busy(grpc_server) as release:
        degraded = mc_stub.FastHeartbeat.future(beat(healthy_mc, health=pb.DEGRADED), metadata=auth, timeout=10)
        with pytest.raises(grpc.FutureTimeoutError):
            degraded.result(timeout=0.5)
        assert MeetingController.objects.get(controller_id=healthy_mc).health_status == HealthStatus.HEALTHY
        release.set()
        assert degraded.result(timeout=10).acknowledged

    assert MeetingController.objects.get(controller_id=healthy_mc).health_status == HealthStatus.DEGRADED
    assert HealthTransition.objects.filter(
        component_id=healthy_mc, from_status=HealthStatus.HEALTHY, to_status=HealthStatus.DEGRADED
    ).exists()


def test_the_loop_refuses_without_a_worker_what_it_can_judge_alone(grpc_server, mc_stub, auth, healthy_mc):
    with every_worker_busy(grpc_server):
        # Bad input and a wrong scope need no I/O: answered at once, with the same status as from a worker.
        with pytest.raises(grpc.RpcError) as invalid:
            mc_stub.FastHeartbeat(beat("bad id!"), metadata=auth, timeout=5)
        assert invalid.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as missing:
            mc_stub.FastHeartbeat(beat(healthy_mc), timeout=5)
        assert missing.value.code() == grpc.StatusCode.UNAUTHENTICATED


def test_a_token_the_process_has_not_verified_waits_for_a_worker(grpc_server, mc_stub, auth, healthy_mc,
                                                                 service_credential):
    fresh = bearer(endpoint_token(service_credential))
    with every_worker_busy(grpc_server) as release:
        pending = mc_stub.FastHeartbeat.future(beat(healthy_mc), metadata=fresh, timeout=10)
        with pytest.raises(grpc.FutureTimeoutError):
            pending.result(timeout=0.5)
        release.set()
        assert pending.result(timeout=10).acknowledged
