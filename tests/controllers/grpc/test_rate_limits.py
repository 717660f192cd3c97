"""Rate limits of the gRPC API over the real server: registrations in Redis (fail open), beats in process."""

from __future__ import annotations

import logging

import grpc
import pytest

from accounts.services.service_tokens import service_credential_create
from audit.models import AuditLog
from controllers.grpc.ratelimit import BeatBuckets, beat_buckets
from controllers.models import HealthStatus
from dark_tower.internal.v1 import internal_pb2 as pb
from darktower.metrics import REGISTRY
from tests.beats import beat_buckets_reset
from tests.controllers.grpc.conftest import bearer, endpoint_token
from tests.factories import make_controller, make_handler

HOUR_MS = 3_600_000


@pytest.fixture(autouse=True)
def tight_limits(settings):
    # An hour-long window: the counters of one test never straddle a window boundary.
    settings.RATE_LIMIT_WINDOW_SECONDS = 3600
    settings.GRPC_RATE_LIMIT_REGISTER_PER_MEMBER = 2
    settings.GRPC_RATE_LIMIT_REGISTER_PER_CLIENT = 4
    # Three beats at once, then (practically) none: these intervals refill one beat in 20 minutes.
    settings.GRPC_HEARTBEAT_BURST = 3
    settings.FAST_HEARTBEAT_INTERVAL_MS = HOUR_MS
    settings.COMPREHENSIVE_HEARTBEAT_INTERVAL_MS = HOUR_MS
    settings.MH_LOAD_REPORT_INTERVAL_MS = HOUR_MS
    beat_buckets_reset(beat_buckets)
    yield
    beat_buckets_reset(beat_buckets)


def rejections(endpoint: str) -> float:
    return REGISTRY.get_sample_value("darktower_rate_limit_rejections_total", {"endpoint": endpoint}) or 0.0


def register_mc(stub, auth, controller_id):
    return stub.RegisterMC(
        pb.RegisterMCRequest(id=controller_id, region="us-east-1", grpc_endpoint="grpc://mc.internal:50052",
                             max_meetings=10, max_participants=100),
        metadata=auth,
    )


def exhausted(call) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as error:
        call()
    assert error.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error.value.details()
    return error.value


def other_caller() -> tuple[tuple[str, str]]:
    return bearer(endpoint_token(service_credential_create(name="other fleet", scopes=["mc:register"])))


def test_registrations_are_limited_per_caller_and_member_and_per_caller(mc_stub, auth):
    before = rejections("grpc:register_mc")
    assert register_mc(mc_stub, auth, "mc-rl-1").accepted
    assert register_mc(mc_stub, auth, "mc-rl-1").accepted

    error = exhausted(lambda: register_mc(mc_stub, auth, "mc-rl-1"))

    assert error.details() == "Too many requests; retry later."
    retry_after = dict(error.trailing_metadata())["retry-after"]
    assert 1 <= int(retry_after) <= 3600
    assert AuditLog.objects.filter(target_id="mc-rl-1").count() == 2  # the refused call wrote nothing
    assert rejections("grpc:register_mc") == before + 1
    # The same member through another credential has counters of its own: not limited, refused only because the
    # member is the first caller's.
    with pytest.raises(grpc.RpcError) as not_owner:
        register_mc(mc_stub, other_caller(), "mc-rl-1")
    assert not_owner.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Every call counts, the refused one too: another member of the first caller is its fourth registration,
    # its last one this window.
    assert register_mc(mc_stub, auth, "mc-rl-2").accepted
    exhausted(lambda: register_mc(mc_stub, auth, "mc-rl-3"))


def test_heartbeats_and_load_reports_are_limited_per_caller_and_member(mc_stub, mh_stub, auth):
    make_controller(controller_id="mc-rl-1", health=HealthStatus.HEALTHY)
    make_controller(controller_id="mc-rl-2", health=HealthStatus.HEALTHY)
    make_handler(handler_id="mh-rl-1", health=HealthStatus.HEALTHY)
    fast = pb.FastHeartbeatRequest(controller_id="mc-rl-1", health=pb.HEALTHY)
    before = rejections("grpc:heartbeat")

    assert mc_stub.FastHeartbeat(fast, metadata=auth).acknowledged
    assert mc_stub.ComprehensiveHeartbeat(
        pb.ComprehensiveHeartbeatRequest(controller_id="mc-rl-1", health=pb.HEALTHY), metadata=auth
    ).acknowledged
    assert mc_stub.FastHeartbeat(fast, metadata=auth).acknowledged
    error = exhausted(lambda: mc_stub.FastHeartbeat(fast, metadata=auth))

    assert error.details() == "too many heartbeats"
    assert int(dict(error.trailing_metadata())["retry-after"]) >= 1
    assert rejections("grpc:heartbeat") == before + 1
    # Other members, and the same member through another credential, are not affected.
    assert mc_stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-rl-2"), metadata=auth).acknowledged
    with pytest.raises(grpc.RpcError) as not_owner:
        mc_stub.FastHeartbeat(fast, metadata=other_caller())
    assert not_owner.value.code() == grpc.StatusCode.PERMISSION_DENIED  # not limited; the member is the first's
    report = pb.SendLoadReportRequest(handler_id="mh-rl-1", health=pb.HEALTHY)
    for _ in range(3):
        assert mh_stub.SendLoadReport(report, metadata=auth).acknowledged
    assert exhausted(lambda: mh_stub.SendLoadReport(report, metadata=auth)).details() == "too many load reports"


def test_with_redis_down_registrations_are_served_and_beats_still_limited(mc_stub, auth, settings, caplog):
    make_controller(controller_id="mc-rl-beat", health=HealthStatus.HEALTHY)
    caplog.set_level(logging.WARNING)
    settings.REDIS_URL = "redis://127.0.0.1:1/0"  # nothing listens there: connections are refused

    for _ in range(4):  # twice over the per-member limit
        assert register_mc(mc_stub, auth, "mc-rl-1").accepted

    assert "rate limiter: Redis unreachable" in caplog.text
    assert AuditLog.objects.filter(target_id="mc-rl-1", event_type="controller_registered").count() == 1
    # Heartbeats never needed Redis: their limit holds through the outage.
    beat = pb.FastHeartbeatRequest(controller_id="mc-rl-beat", health=pb.HEALTHY)
    for _ in range(3):
        assert mc_stub.FastHeartbeat(beat, metadata=auth).acknowledged
    exhausted(lambda: mc_stub.FastHeartbeat(beat, metadata=auth))


def test_buckets_refill_and_forget_full_ones_when_the_table_is_full():
    now = [1000.0]  # the buckets' clock, moved by hand
    buckets = BeatBuckets(max_buckets=4, clock=lambda: now[0])
    assert buckets.take(("e", "c", "m"), rate=100.0, burst=1) == 0.0
    wait = buckets.take(("e", "c", "m"), rate=100.0, burst=1)
    assert wait == pytest.approx(0.01)
    now[0] += wait / 2
    assert buckets.take(("e", "c", "m"), rate=100.0, burst=1) == pytest.approx(wait / 2)  # half refilled
    now[0] += wait / 2 + 1e-6
    assert buckets.take(("e", "c", "m"), rate=100.0, burst=1) == 0.0

    for member in "abc":
        buckets.take(("e", "c", member), rate=1000.0, burst=5)
    now[0] += 0.02  # every bucket is full again
    buckets.take(("e", "c", "new"), rate=1000.0, burst=5)
    assert len(buckets) == 1

    slow = BeatBuckets(max_buckets=4)
    for member in "abcd":
        slow.take(("e", "c", member), rate=0.001, burst=5)
    slow.take(("e", "c", "new"), rate=0.001, burst=5)
    # All busy: forgotten (fail open) rather than scanned again on every new member.
    assert len(slow) == 1
