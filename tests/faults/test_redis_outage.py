"""Redis stops and comes back under the REST API, the gRPC server and a Celery worker.

REST and gRPC keep serving while it is away (rate limits and the token blacklist fail open, as
darktower/api/ratelimit.py and accounts/blacklist.py document), and rate limiting resumes once it is back.
A worker whose broker went away picks up tasks again once it returns.
"""

from __future__ import annotations

import time
from datetime import timedelta

import pytest
from django.utils import timezone

from controllers.models import HealthStatus, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from meetings.models import Meeting
from tests.controllers.grpc.conftest import bearer
from tests.factories import make_controller, make_user, user_token
from tests.faults.processes import service_token, wait_for

# One xdist worker runs the fault, load and bench tests, one at a time (make test's --dist loadgroup): each
# starts several servers and fleets of its own, and a module's throwaway servers are started once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("processes")]

MEETINGS = "/api/v1/meetings"
SWEEP = "controllers.tasks.sweep_stale"
# Kombu reconnects with a growing back-off; a loaded machine.
TASK_TIMEOUT_SECONDS = 45
OUTAGE_SECONDS = 4


@pytest.fixture
def on_own_redis(settings, own_redis):
    settings.REDIS_URL = own_redis.url
    settings.RATE_LIMIT_WINDOW_SECONDS = 3600  # no window boundary inside the test
    settings.RATE_LIMIT_MEETING_CREATE_PER_PRINCIPAL = 2
    return own_redis


def _create_meetings(user, count: int) -> list[int]:
    from rest_framework.test import APIClient

    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {user_token(user)}")  # a fresh jti: the blacklist is asked
    return [client.post(MEETINGS, {"display_name": "outage"}, format="json").status_code for _ in range(count)]


def _register_and_beat(mc_stub, controller_id: str) -> None:
    metadata = bearer(service_token())  # a fresh jti, and a registration limit counted in Redis
    mc_stub.RegisterMC(pb.RegisterMCRequest(id=controller_id, region="us-east-1", grpc_endpoint="grpc://mc:1",
                                            max_meetings=10, max_participants=100), metadata=metadata)
    capacity = pb.ControllerCapacity(max_meetings=10, current_meetings=1, max_participants=100)
    for health in (pb.HEALTHY, pb.HEALTHY, pb.DEGRADED):
        response = mc_stub.FastHeartbeat(
            pb.FastHeartbeatRequest(controller_id=controller_id, health=health, capacity=capacity), metadata=metadata
        )
        assert response.acknowledged


def test_rest_and_grpc_keep_serving_without_redis_and_limits_resume(on_own_redis, mc_stub):
    user = make_user()
    # Up: the limit holds (2 per window), so these requests really count in this Redis.
    assert _create_meetings(user, 3) == [201, 201, 429]
    assert any(on_own_redis.client().scan_iter("ratelimit:*"))
    _register_and_beat(mc_stub, "mc-redis-up")

    on_own_redis.stop()
    # Down (and the pooled connections of the clients above broken): served, unlimited.
    assert _create_meetings(user, 3) == [201, 201, 201]
    _register_and_beat(mc_stub, "mc-redis-down")
    assert MeetingController.objects.get(pk="mc-redis-down").health_status == HealthStatus.DEGRADED

    on_own_redis.start()  # empty: no persistence
    assert _create_meetings(user, 3) == [201, 201, 429]
    _register_and_beat(mc_stub, "mc-redis-back")
    assert Meeting.objects.count() == 2 + 3 + 2


def _stale_controller(region: str) -> str:
    return make_controller(region=region, last_heartbeat_at=timezone.now() - timedelta(hours=1)).controller_id


def _unhealthy(controller_id: str) -> bool:
    return MeetingController.objects.get(pk=controller_id).health_status == HealthStatus.UNHEALTHY


def test_celery_tasks_resume_after_redis_comes_back(worker_on_own_redis, own_redis, send_task):
    before = _stale_controller("redis-a")
    send_task(SWEEP)
    wait_for(lambda: _unhealthy(before), timeout=TASK_TIMEOUT_SECONDS, what="the sweep before the outage",
             log=worker_on_own_redis.log)

    own_redis.stop()
    wait_for(lambda: "Connection to broker lost" in worker_on_own_redis.output(), timeout=TASK_TIMEOUT_SECONDS,
             what="the worker to notice its broker is gone", log=worker_on_own_redis.log)
    time.sleep(OUTAGE_SECONDS)  # long enough for reconnection attempts to fail
    assert worker_on_own_redis.process.poll() is None
    own_redis.start()

    after = _stale_controller("redis-b")
    send_task(SWEEP)
    wait_for(lambda: _unhealthy(after), timeout=TASK_TIMEOUT_SECONDS, what="a task sent after the outage to run",
             log=worker_on_own_redis.log)
    assert worker_on_own_redis.process.poll() is None
