"""End to end: an MC registers and heartbeats over gRPC (the real server on a loopback port, a real service
token); a real Celery worker with its embedded beat, on the real broker and this test's database, marks it
unhealthy on its own once its heartbeats stop, and the relay publishes the change to Redis. Thresholds are
shortened through the worker's environment (and this process's settings, where the gRPC server runs)."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import grpc
import pytest
import redis
from django.core.management import call_command

from audit.models import AuditLog, OutboxEvent
from controllers.capacity_cache import CAPACITY_TTL_SECONDS
from controllers.models import HealthStatus, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc
from tests.controllers.grpc.conftest import bearer, endpoint_token
from tests.faults.processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

THRESHOLD_SECONDS = 2
SWEEP_INTERVAL_SECONDS = 1
# Beat tick alignment, a task's round trip through the broker, a loaded 2-core machine.
SLACK_SECONDS = 8
# The interval the registration answer tells the MC; the GC's per-member heartbeat limit is
# GRPC_HEARTBEAT_RATE_FACTOR (3) times that rate, so beating every 0.4 s stays within it.
FAST_HEARTBEAT_INTERVAL_MS = 1000
BEAT_EVERY_SECONDS = 0.4


@pytest.fixture
def worker(start_worker, settings) -> Path:
    settings.STALE_SWEEP_INTERVAL_SECONDS = SWEEP_INTERVAL_SECONDS
    call_command("setup_schedules")  # the worker's beat reads its schedule from this database
    return start_worker(
        STALE_SWEEP_INTERVAL_SECONDS=str(SWEEP_INTERVAL_SECONDS),
        HEARTBEAT_STALE_THRESHOLD_SECONDS=str(THRESHOLD_SECONDS),
    ).log


def _status(controller_id: str) -> str:
    return MeetingController.objects.values_list("health_status", flat=True).get(pk=controller_id)


def test_an_mc_that_stops_heartbeating_over_grpc_turns_unhealthy_on_its_own(
    worker, grpc_server, service_credential, settings
):
    # The gRPC server runs in this process: its heartbeat coalescer ("silent for half the threshold") and its
    # rate limits read this process's settings.
    settings.HEARTBEAT_STALE_THRESHOLD_SECONDS = THRESHOLD_SECONDS
    settings.FAST_HEARTBEAT_INTERVAL_MS = FAST_HEARTBEAT_INTERVAL_MS
    controller_id = f"mc-e2e-{uuid.uuid4().hex[:12]}"
    auth = bearer(endpoint_token(service_credential, scope="mc:register"))
    client = redis.Redis.from_url(settings.REDIS_URL)
    capacity_key = f"controller:{controller_id}:capacity"
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        stub = internal_pb2_grpc.GlobalControllerServiceStub(channel)
        registered = stub.RegisterMC(
            pb.RegisterMCRequest(id=controller_id, region="e2e-1", grpc_endpoint=f"grpc://{controller_id}.internal:50052",
                                 max_meetings=50, max_participants=500),
            metadata=auth,
        )
        assert registered.accepted and registered.fast_heartbeat_interval_ms == FAST_HEARTBEAT_INTERVAL_MS
        assert _status(controller_id) == HealthStatus.PENDING

        # Heartbeating for longer than the threshold, across several sweeps: healthy, never marked.
        heartbeating_until = time.monotonic() + THRESHOLD_SECONDS + 2 * SWEEP_INTERVAL_SECONDS
        meetings = 0
        while time.monotonic() < heartbeating_until:
            meetings += 1
            beat = stub.FastHeartbeat(
                pb.FastHeartbeatRequest(
                    controller_id=controller_id, health=pb.HEALTHY,
                    capacity=pb.ControllerCapacity(max_meetings=50, current_meetings=meetings, max_participants=500,
                                                   current_participants=10 * meetings),
                ),
                metadata=auth,
            )
            assert beat.acknowledged
            assert _status(controller_id) == HealthStatus.HEALTHY
            time.sleep(BEAT_EVERY_SECONDS)
    stopped = time.monotonic()

    try:
        # The heartbeat flush keeps the capacity hash fresh with the numbers the MC reported.
        wait_for(
            lambda: client.hget(capacity_key, "current_meetings") == str(meetings).encode(), timeout=5,
            what="the heartbeat flush to refresh the capacity hash",
        )
        assert client.hget(capacity_key, "health") == b"healthy"
        assert 0 < client.ttl(capacity_key) <= CAPACITY_TTL_SECONDS

        wait_for(
            lambda: _status(controller_id) == HealthStatus.UNHEALTHY,
            timeout=THRESHOLD_SECONDS + SWEEP_INTERVAL_SECONDS + SLACK_SECONDS,
            what=f"{controller_id} to be marked unhealthy", log=worker,
        )
        assert time.monotonic() - stopped >= THRESHOLD_SECONDS - 0.5

        controller = MeetingController.objects.get(pk=controller_id)
        assert (controller.current_meetings, controller.current_participants) == (meetings, 10 * meetings)
        audit = AuditLog.objects.get(event_type="controller_unhealthy", target_id=controller_id)
        assert audit.metadata["from_status"] == "healthy"
        assert audit.metadata["threshold_seconds"] == THRESHOLD_SECONDS
        assert audit.metadata["last_heartbeat_at"] == controller.last_heartbeat_at.isoformat()

        # The relay (every 2 s) publishes the change: the capacity hash now says unhealthy.
        event = OutboxEvent.objects.filter(event_type="controller_unhealthy", aggregate_id=controller_id)
        wait_for(
            lambda: event.filter(processed_at__isnull=False).exists(), timeout=10,
            what="the relay to publish the event", log=worker,
        )
        assert client.hget(capacity_key, "health") == b"unhealthy"
    finally:
        client.delete(capacity_key)
        client.close()
