"""Calls that need a worker thread are admitted while few enough wait for one; beyond GRPC_MAX_QUEUED_CALLS a
call is refused at once with RESOURCE_EXHAUSTED and a retry-after that spreads the refused callers over the time
the workers need for them (controllers.grpc.admission), instead of waiting past its deadline in a queue."""

from __future__ import annotations

import random

import grpc
import pytest

from accounts import blacklist
from controllers.grpc.admission import Admission
from controllers.heartbeats import controller_heartbeats
from controllers.models import HealthStatus, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from tests.controllers.grpc.conftest import every_worker_busy
from tests.faults.processes import wait_for


def register(controller_id: str) -> pb.RegisterMCRequest:
    return pb.RegisterMCRequest(id=controller_id, region="us-east-1", grpc_endpoint="grpc://mc.internal:50052",
                                max_meetings=10, max_participants=100)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_admits_up_to_the_limit_then_refuses_until_a_call_leaves():
    admission = Admission(clock=Clock(), rng=random.Random(1))

    assert admission.enter(limit=2) == 0
    assert admission.enter(limit=2) == 0
    assert admission.enter(limit=2) >= 1
    admission.leave()
    assert admission.enter(limit=2) == 0
    assert admission.waiting == 2


def test_before_the_workers_rate_is_known_the_queue_stands_for_a_second_of_work():
    admission = Admission(clock=Clock(), rng=random.Random(3))
    for _ in range(100):
        assert admission.enter(limit=100) == 0

    waits = [admission.enter(limit=100) for _ in range(1000)]

    assert max(waits) <= 11  # 1,000 refused / 100 a second, not a wait as long as the limit allows


def test_the_refused_are_spread_over_the_time_the_workers_need_for_them():
    clock = Clock()
    admission = Admission(clock=clock, rng=random.Random(7))
    # The workers finish 100 calls a second.
    for _ in range(5):
        for _ in range(100):
            assert admission.enter(limit=10) == 0
            admission.leave()
        clock.now += 1.0
    for _ in range(10):
        admission.enter(limit=10)
    # A storm: 2,000 callers refused in one second, 1,000 more in the next.
    first = [admission.enter(limit=10) for _ in range(2000)]
    clock.now += 1.0

    waits = [admission.enter(limit=10) for _ in range(1000)]

    assert min(first) == 1 and min(waits) >= 1
    # 2,000 to 3,000 refused within the last two seconds: 20 to 30 s of the workers' time.
    assert max(first) <= 21 and 20 <= max(waits) <= 31
    # About the workers' rate comes back in any one second, not the whole storm at once.
    assert sum(1 for wait in waits if wait == 1) < 2 * 100
    assert all(sum(1 for wait in waits if wait == second) < 2 * 100 for second in range(1, 21))


def test_a_busy_server_refuses_registrations_with_a_retry_after_and_serves_the_queued_ones(
    grpc_server, mc_stub, auth, settings
):
    settings.GRPC_MAX_QUEUED_CALLS = 2

    with every_worker_busy(grpc_server):
        queued = [mc_stub.RegisterMC.future(register(f"mc-queued-{number}"), metadata=auth) for number in range(2)]
        wait_for(lambda: grpc_server.executor._work_queue.qsize() == 2, timeout=10, what="two calls queued")
        with pytest.raises(grpc.RpcError) as refused:
            mc_stub.RegisterMC(register("mc-refused"), metadata=auth, timeout=10)

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert int(dict(refused.value.trailing_metadata())["retry-after"]) >= 1
    assert [future.result(timeout=30).accepted for future in queued] == [True, True]
    assert mc_stub.RegisterMC(register("mc-refused"), metadata=auth, timeout=10).accepted


def test_a_running_members_beat_whose_token_needs_a_check_is_queued_not_refused(
    grpc_server, mc_stub, auth, settings, monkeypatch
):
    # A running fleet's beat goes to a worker only when its token's revocation lookup must be asked again: refusing
    # it because a restarting fleet fills the queue would let the storm disturb the fleet that is running.
    settings.GRPC_MAX_QUEUED_CALLS = 1
    mc_stub.RegisterMC(register("mc-running"), metadata=auth, timeout=10)
    MeetingController.objects.filter(pk="mc-running").update(health_status=HealthStatus.HEALTHY)
    controller_heartbeats.remember("mc-running", HealthStatus.HEALTHY)

    with every_worker_busy(grpc_server):
        queued = mc_stub.RegisterMC.future(register("mc-queued"), metadata=auth)
        wait_for(lambda: grpc_server.service_guard.admission.waiting == 1, timeout=10, what="the registration queued")
        monkeypatch.setattr(blacklist, "LOOKUP_CACHE_SECONDS", 0.0)  # every revocation lookup must be asked again
        beat = mc_stub.FastHeartbeat.future(pb.FastHeartbeatRequest(controller_id="mc-running", health=pb.HEALTHY),
                                            metadata=auth)
        wait_for(lambda: grpc_server.service_guard.admission.waiting == 2 or beat.done(), timeout=10,
                 what="the beat queued or answered")
        assert not beat.done()

    assert beat.result(timeout=30).acknowledged
    assert queued.result(timeout=30).accepted
