"""Load: 200 simulated meeting controllers beat for 20 s against a real `manage.py grpcserver`.

Each MC is one grpc.aio coroutine (hundreds of calls in flight over a few channels) that registers, then sends
fast heartbeats every 0.5-1 s (a comprehensive one every fifth beat) instead of every 10 s, so that 20 s hold
as many beats as a few minutes of a real fleet. Every beat carries a number that only grows (its sequence
number as current_meetings), so the row shows exactly which beat landed last.

- zero errors: every call answers OK;
- no lost heartbeat: controllers.heartbeats acknowledges a beat before writing it and promises the write
  within one flush interval (HEARTBEAT_FLUSH_INTERVAL_MS); once that has passed (plus slack for a loaded
  machine) every row holds the values of its last acknowledged beat and a last_heartbeat_at no earlier than
  the moment that beat was sent;
- no connection leak: the server's connections in pg_stat_activity (by its application_name) do not grow
  from the middle of the run to its end.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import pytest
from django.conf import settings

from controllers.models import HealthStatus, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc
from tests.controllers.grpc.conftest import bearer
from tests.faults.processes import connections_named, conninfo_of_test_db, service_token

# One xdist worker runs the fault, load and bench tests, one at a time (make test's --dist loadgroup): each
# starts several servers and fleets of its own, and a module's throwaway servers are started once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("processes")]

CONTROLLERS = 200
DURATION_SECONDS = 20.0
# A share of the fast heartbeat interval the server asks for (1 s here): 0.5-1 s between beats.
BEAT_JITTER = (0.5, 1.0)
CHANNELS = 4
CALL_TIMEOUT_SECONDS = 15.0
# A loaded 2-core machine (other test runs beside this one) on top of the documented flush delay.
FLUSH_SLACK_SECONDS = 3.0
MAX_MEETINGS = 100_000


@dataclass
class Acked:
    """The last acknowledged beat of one MC: what its row must show once the flush delay has passed."""

    beat: int = 0
    participants: int = 0
    cpu: float | None = None
    sent_at: float = 0.0  # time.time() when the acknowledged beat was sent


@dataclass
class Run:
    acked: dict[str, Acked]
    codes: Counter
    calls: int = 0
    connections: list[tuple[float, int]] | None = None


async def _controller(index: int, channel: grpc.aio.Channel, metadata, run: Run, stop_at: float) -> None:
    stub = internal_pb2_grpc.GlobalControllerServiceStub(channel)
    rng = random.Random(index)
    controller_id = f"load-mc-{index:03d}"
    await asyncio.sleep(rng.uniform(0, 1.0))  # registrations spread over the first second

    async def call(rpc, request):
        run.calls += 1
        try:
            response = await rpc(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        except grpc.aio.AioRpcError as exc:
            run.codes[exc.code().name] += 1
            return None
        run.codes["OK"] += 1
        return response

    registered = await call(stub.RegisterMC, pb.RegisterMCRequest(
        id=controller_id, region=("us-east-1", "eu-west-1")[index % 2],
        grpc_endpoint=f"grpc://{controller_id}.load.internal:50052", max_meetings=MAX_MEETINGS,
        max_participants=MAX_MEETINGS * 10,
    ))
    if registered is None:
        return
    # As a real MC does: beat at the interval the registration answer names (here shortened, see the fixture).
    interval = registered.fast_heartbeat_interval_ms / 1000
    acked = run.acked.setdefault(controller_id, Acked())
    beat = 0
    while time.monotonic() < stop_at:
        beat += 1
        participants = beat * 3 + rng.randrange(3)
        capacity = pb.ControllerCapacity(max_meetings=MAX_MEETINGS, current_meetings=beat,
                                         max_participants=MAX_MEETINGS * 10, current_participants=participants)
        sent_at = time.time()
        if beat % 5 == 0:
            cpu = float(rng.randrange(101))  # whole numbers: exact in the column's `real`
            ok = await call(stub.ComprehensiveHeartbeat, pb.ComprehensiveHeartbeatRequest(
                controller_id=controller_id, capacity=capacity, health=pb.HEALTHY, cpu_usage_percent=cpu,
                memory_usage_percent=50.0))
        else:
            cpu = None
            ok = await call(stub.FastHeartbeat, pb.FastHeartbeatRequest(
                controller_id=controller_id, capacity=capacity, health=pb.HEALTHY))
        if ok is not None:
            acked.beat, acked.participants, acked.sent_at = beat, participants, sent_at
            if cpu is not None:
                acked.cpu = cpu
        await asyncio.sleep(interval * rng.uniform(*BEAT_JITTER))


async def _watch_connections(run: Run, application_name: str, started: float, stop_at: float) -> None:
    conninfo = conninfo_of_test_db()
    while time.monotonic() < stop_at:
        count = await asyncio.to_thread(connections_named, conninfo, application_name)
        run.connections.append((time.monotonic() - started, count))
        await asyncio.sleep(1.0)


async def _drive(target: str, metadata, application_name: str) -> Run:
    run = Run(acked={}, codes=Counter(), connections=[])
    channels = [grpc.aio.insecure_channel(target, options=[("grpc.use_local_subchannel_pool", 1)])
                for _ in range(CHANNELS)]
    try:
        started = time.monotonic()
        stop_at = started + DURATION_SECONDS
        await asyncio.gather(
            _watch_connections(run, application_name, started, stop_at),
            *(_controller(index, channels[index % CHANNELS], metadata, run, stop_at) for index in range(CONTROLLERS)),
        )
    finally:
        for channel in channels:
            await channel.close()
    return run


def test_200_controllers_for_20_seconds_lose_nothing_and_leak_nothing(grpcserver_on_test_db):
    server = grpcserver_on_test_db
    run = asyncio.run(_drive(server.target, bearer(service_token()), server.application_name))
    stopped = time.monotonic()

    assert run.codes == Counter({"OK": run.calls}), run.codes
    assert len(run.acked) == CONTROLLERS
    # Each MC beat at least every second for 20 s, minus its start-up spread: the load really was there.
    assert all(acked.beat >= 12 for acked in run.acked.values()), min(a.beat for a in run.acked.values())

    def mismatches() -> list[tuple]:
        rows = {row.controller_id: row for row in MeetingController.objects.filter(controller_id__in=run.acked)}
        wrong = []
        for controller_id, acked in run.acked.items():
            row = rows.get(controller_id)
            expected = (acked.beat, acked.participants, acked.cpu, HealthStatus.HEALTHY)
            found = row and (row.current_meetings, row.current_participants, row.cpu_usage_percent, row.health_status)
            if found != expected or row.last_heartbeat_at < datetime.fromtimestamp(acked.sent_at - 0.05, UTC):
                wrong.append((controller_id, expected, found, acked.sent_at, row and row.last_heartbeat_at))
        return wrong

    flush_delay = settings.HEARTBEAT_FLUSH_INTERVAL_MS / 1000
    deadline = stopped + flush_delay + FLUSH_SLACK_SECONDS
    while (wrong := mismatches()) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not wrong, f"{len(wrong)} rows miss their last acknowledged beat, e.g. {wrong[:3]}"

    # Connections: each worker thread, the flush thread and the database watch hold at most one each.
    samples = run.connections
    middle = [count for at, count in samples if DURATION_SECONDS * 0.4 <= at <= DURATION_SECONDS * 0.6]
    end = [count for at, count in samples if at >= DURATION_SECONDS * 0.75]
    assert middle and end and min(middle) >= 1, samples  # the count does see the server's connections
    assert max(end) <= max(middle), samples
    assert max(count for _, count in samples) <= server.workers + 2, samples
    assert connections_named(conninfo_of_test_db(), server.application_name) <= max(middle)
    assert "Traceback" not in server.output()
