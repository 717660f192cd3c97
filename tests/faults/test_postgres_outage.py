"""PostgreSQL stops under a real `manage.py grpcserver` that is serving heartbeats, then comes back.

While it is away: every call that needs the database answers UNAVAILABLE with a short message (never UNKNOWN,
INTERNAL or a stack trace), a heartbeat that needs no write now is acknowledged from memory (the coalescing
contract, controllers/heartbeats.py), health checking says NOT_SERVING, and the process keeps running.
When it is back: the server serves again by itself, and the beats it acknowledged during the outage land.
"""

from __future__ import annotations

import time
from collections import Counter, defaultdict

import grpc
import psycopg
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc
from tests.controllers.grpc.conftest import bearer
from tests.faults.processes import wait_for

# One xdist worker runs the fault, load and bench tests, one at a time (make test's --dist loadgroup): each
# starts several servers and fleets of its own, and a module's throwaway servers are started once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("processes")]

CONTROLLERS = [f"mc-outage-{number}" for number in range(5)]
DEGRADING = "mc-outage-degrading"  # only ever sends the state change, so no acknowledged beat of it is pending
OUTAGE_SECONDS = 4.0
# DatabaseWatch checks every 2 s; a loaded machine.
HEALTH_SLACK_SECONDS = 8.0
RECOVERY_TIMEOUT_SECONDS = 20.0
CALL_TIMEOUT_SECONDS = 10.0


def _register(controller_id: str) -> pb.RegisterMCRequest:
    return pb.RegisterMCRequest(id=controller_id, region="us-east-1", grpc_endpoint=f"grpc://{controller_id}:50052",
                                max_meetings=100, max_participants=1000)


def _beat(controller_id: str, meetings: int, health: int = pb.HEALTHY) -> pb.FastHeartbeatRequest:
    return pb.FastHeartbeatRequest(
        controller_id=controller_id, health=health,
        capacity=pb.ControllerCapacity(max_meetings=100, current_meetings=meetings, max_participants=1000),
    )


def _call(rpc, request, metadata) -> tuple[grpc.StatusCode, str]:
    try:
        rpc(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.RpcError as exc:
        return exc.code(), exc.details()
    return grpc.StatusCode.OK, ""


def _health(channel: grpc.Channel) -> int:
    return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5).status


def _wait_for_rows(rows, expected: dict, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while {key: rows().get(key) for key in expected} != expected and time.monotonic() < deadline:
        time.sleep(0.1)
    assert {key: rows().get(key) for key in expected} == expected


def _rows_of(postgres):
    def rows() -> dict[str, tuple[int, str]]:
        with psycopg.connect(**postgres.conninfo()) as conn:
            found = conn.execute(
                "SELECT controller_id, current_meetings, health_status FROM meeting_controllers "
                "WHERE controller_id LIKE 'mc-outage-%%'"
            ).fetchall()
        return {controller_id: (current, health) for controller_id, current, health in found}

    return rows


def test_postgres_stopped_gives_unavailable_and_service_resumes_by_itself(grpcserver_on_own_postgres):
    server, postgres = grpcserver_on_own_postgres.server, grpcserver_on_own_postgres.postgres
    metadata = bearer(grpcserver_on_own_postgres.token)
    with grpc.insecure_channel(server.target) as channel:
        stub = internal_pb2_grpc.GlobalControllerServiceStub(channel)
        wait_for(lambda: _health(channel) == health_pb2.HealthCheckResponse.SERVING, timeout=10,
                 what="SERVING", log=server.log)
        for controller_id in [*CONTROLLERS, DEGRADING]:
            stub.RegisterMC(_register(controller_id), metadata=metadata)
            for meetings in (1, 2):  # pending -> healthy (written at once), then a coalesced beat
                stub.FastHeartbeat(_beat(controller_id, meetings), metadata=metadata)

        postgres.stop("fast")
        codes: dict[str, Counter] = defaultdict(Counter)
        details: set[str] = set()
        acked_meetings: dict[str, int] = {}
        meetings = 2
        outage_ends = time.monotonic() + OUTAGE_SECONDS
        while time.monotonic() < outage_ends:
            meetings += 1
            for controller_id in CONTROLLERS:
                code, detail = _call(stub.FastHeartbeat, _beat(controller_id, meetings), metadata)
                codes["beat"][code.name] += 1
                details.add(detail)
                if code == grpc.StatusCode.OK:
                    acked_meetings[controller_id] = meetings
            # A state change is written before it is acknowledged; a registration always writes.
            code, detail = _call(stub.FastHeartbeat, _beat(DEGRADING, meetings, pb.DEGRADED), metadata)
            codes["degraded"][code.name] += 1
            details.add(detail)
            code, detail = _call(stub.RegisterMC, _register(f"mc-outage-new-{meetings}"), metadata)
            codes["register"][code.name] += 1
            details.add(detail)
            time.sleep(0.5)
        wait_for(lambda: _health(channel) == health_pb2.HealthCheckResponse.NOT_SERVING,
                 timeout=HEALTH_SLACK_SECONDS, what="NOT_SERVING while the database is away", log=server.log)

        assert set(codes["register"]) == {"UNAVAILABLE"}, codes
        assert set(codes["degraded"]) == {"UNAVAILABLE"}, codes
        assert set(codes["beat"]) <= {"OK", "UNAVAILABLE"}, codes
        assert details <= {"", "database unavailable; retry later"}, details
        assert server.process.poll() is None

        postgres.start()
        wait_for(lambda: _health(channel) == health_pb2.HealthCheckResponse.SERVING,
                 timeout=RECOVERY_TIMEOUT_SECONDS, what="SERVING again", log=server.log)
        # Back by itself: no restart, every call answers again.
        stub.RegisterMC(_register("mc-outage-after"), metadata=metadata)
        stub.FastHeartbeat(_beat("mc-outage-after", 1), metadata=metadata)
        stub.FastHeartbeat(_beat(DEGRADING, meetings, pb.DEGRADED), metadata=metadata)

    # What was acknowledged from memory during the outage reaches the rows once the flush succeeds again.
    rows = _rows_of(postgres)
    expected = {controller_id: (acked_meetings.get(controller_id, 2), "healthy") for controller_id in CONTROLLERS}
    expected[DEGRADING] = (meetings, "degraded")
    _wait_for_rows(rows, expected)
    registered = rows()
    assert "mc-outage-after" in registered
    assert not [key for key in registered if key.startswith("mc-outage-new-")]  # refused, not half-written
    assert "Traceback" not in server.output()


def test_a_state_change_refused_during_the_outage_keeps_the_beats_acknowledged_before_it(
    grpcserver_on_own_postgres,
):
    server, postgres = grpcserver_on_own_postgres.server, grpcserver_on_own_postgres.postgres
    metadata = bearer(grpcserver_on_own_postgres.token)
    controller_id = "mc-outage-refused-change"
    with grpc.insecure_channel(server.target) as channel:
        stub = internal_pb2_grpc.GlobalControllerServiceStub(channel)
        wait_for(lambda: _health(channel) == health_pb2.HealthCheckResponse.SERVING,
                 timeout=RECOVERY_TIMEOUT_SECONDS, what="SERVING", log=server.log)
        stub.RegisterMC(_register(controller_id), metadata=metadata)
        stub.FastHeartbeat(_beat(controller_id, 1), metadata=metadata)  # pending -> healthy, written at once

        postgres.stop("fast")
        try:
            stub.FastHeartbeat(_beat(controller_id, 7), metadata=metadata)  # acknowledged from memory
            code, _ = _call(stub.FastHeartbeat, _beat(controller_id, 8, pb.DEGRADED), metadata)
            assert code == grpc.StatusCode.UNAVAILABLE  # not acknowledged: the MC sends it again
        finally:
            postgres.start()
        wait_for(lambda: _health(channel) == health_pb2.HealthCheckResponse.SERVING,
                 timeout=RECOVERY_TIMEOUT_SECONDS, what="SERVING again", log=server.log)

    _wait_for_rows(_rows_of(postgres), {controller_id: (7, "healthy")})
