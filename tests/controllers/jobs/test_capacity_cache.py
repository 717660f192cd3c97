"""The Redis capacity hash `controller:{id}:capacity` (TTL 5 minutes, refreshed on heartbeat), written
by the heartbeat flush and by synchronous beat writes, failing open when Redis does not answer."""

from __future__ import annotations

import logging
import re
import socket
import time
import uuid
from collections.abc import Iterable, Iterator

import pytest
import redis

from audit.relay import outbox_relay
from controllers import capacity_cache, heartbeats
from controllers.capacity_cache import CAPACITY_TTL_SECONDS, capacity_cache_refresh
from controllers.heartbeats import HeartbeatRecorder
from controllers.members import CONTROLLERS, HANDLERS
from controllers.models import HealthStatus, MeetingController
from controllers.services import beats as beats_module
from controllers.services.beats import Beat
from controllers.services.operations import controller_drain, controller_undrain
from controllers.services.registration import controller_register
from tests.factories import make_controller, make_handler
from tests.plans import copy_members, record_plans

pytestmark = pytest.mark.django_db


@pytest.fixture
def recorder(settings) -> Iterator[HeartbeatRecorder]:
    settings.HEARTBEAT_FLUSH_INTERVAL_MS = 5000  # its thread never flushes during a test: flushed by hand
    recorder = HeartbeatRecorder(CONTROLLERS)
    yield recorder
    recorder.stop(timeout=5)


def _controller(redis_client: redis.Redis, **extra) -> str:
    controller_id = f"mc-cache-{uuid.uuid4().hex[:12]}"  # Redis is shared with concurrent runs: unique keys
    make_controller(controller_id=controller_id, **extra)
    return controller_id


def _key(controller_id: str) -> str:
    return f"controller:{controller_id}:capacity"


def _hash(redis_client: redis.Redis, controller_id: str) -> dict[str, str]:
    return {key.decode(): value.decode() for key, value in redis_client.hgetall(_key(controller_id)).items()}


def test_a_flush_refreshes_the_hash_with_the_new_numbers_and_the_ttl(recorder, redis_client):
    controller_id = _controller(redis_client, health=HealthStatus.HEALTHY, max_meetings=100, max_participants=1000)
    other = _controller(redis_client, health=HealthStatus.DEGRADED)
    # What an earlier refresh left: old numbers, about to expire.
    redis_client.hset(_key(controller_id), mapping={"current_meetings": "1", "health": "healthy"})
    redis_client.expire(_key(controller_id), 3)
    for member in (controller_id, other):
        recorder.remember(member, MeetingController.objects.get(pk=member).health_status)

    recorder.record(Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": 7, "current_participants": 40}))
    recorder.record(Beat(other, HealthStatus.DEGRADED, {"current_meetings": 2}))
    assert _hash(redis_client, controller_id)["current_meetings"] == "1"  # coalesced, not written yet

    assert recorder.flush() == 2

    row = MeetingController.objects.get(pk=controller_id)
    assert _hash(redis_client, controller_id) == {
        "max_meetings": "100", "current_meetings": "7", "max_participants": "1000", "current_participants": "40",
        "health": "healthy", "last_update": str(int(row.last_heartbeat_at.timestamp())),
    }
    assert CAPACITY_TTL_SECONDS - 5 < redis_client.ttl(_key(controller_id)) <= CAPACITY_TTL_SECONDS
    assert _hash(redis_client, other)["health"] == "degraded"
    assert _hash(redis_client, other)["current_meetings"] == "2"
    assert 0 < redis_client.ttl(_key(other)) <= CAPACITY_TTL_SECONDS


def test_a_health_change_written_synchronously_reaches_the_hash(recorder, redis_client):
    controller_id = _controller(redis_client, health=HealthStatus.PENDING)
    redis_client.delete(_key(controller_id))

    # A pending controller's first good beat is written at once (pending -> healthy), not coalesced.
    recorder.record(Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": 3}))

    assert recorder.pending_count() == 0
    assert MeetingController.objects.get(pk=controller_id).health_status == HealthStatus.HEALTHY
    capacity = _hash(redis_client, controller_id)
    assert capacity["health"] == "healthy" and capacity["current_meetings"] == "3"
    assert 0 < redis_client.ttl(_key(controller_id)) <= CAPACITY_TTL_SECONDS


def test_drain_undrain_and_registration_reach_the_hash_through_the_relay(redis_client, operator):
    controller_id = _controller(redis_client, health=HealthStatus.HEALTHY)
    redis_client.hset(_key(controller_id), "health", "healthy")

    controller_drain(controller_id=controller_id, actor_user_id=operator.user_id)
    outbox_relay()
    assert _hash(redis_client, controller_id)["health"] == "draining"

    controller_undrain(controller_id=controller_id, actor_user_id=operator.user_id)
    outbox_relay()
    assert _hash(redis_client, controller_id)["health"] == "pending"

    registered = f"mc-cache-{uuid.uuid4().hex[:12]}"
    controller_register(
        controller_id=registered, region="us-east-1", grpc_endpoint="grpc://10.0.0.1:50051",
        webtransport_endpoint="", max_meetings=7, max_participants=70,
    )
    outbox_relay()
    assert _hash(redis_client, registered)["health"] == "pending"
    assert redis_client.ttl(_key(registered)) <= CAPACITY_TTL_SECONDS


def test_a_state_an_operator_set_reaches_the_hash_with_the_next_heartbeat(recorder, redis_client, operator):
    # Also without the relay: the hash learns it from the row when the controller's next beat is flushed.
    controller_id = _controller(redis_client, health=HealthStatus.HEALTHY)
    recorder.remember(controller_id, HealthStatus.HEALTHY)
    redis_client.hset(_key(controller_id), "health", "healthy")

    controller_drain(controller_id=controller_id, actor_user_id=operator.user_id)
    recorder.record(Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": 1}))
    assert recorder.flush() == 1

    assert _hash(redis_client, controller_id)["health"] == "draining"


def test_a_gone_controller_loses_its_hash_and_a_key_of_another_type_fails_alone(redis_client):
    kept, wrong_type = _controller(redis_client), _controller(redis_client)
    gone = f"mc-cache-gone-{uuid.uuid4().hex[:12]}"
    redis_client.hset(_key(gone), "health", "healthy")
    redis_client.delete(_key(wrong_type))
    redis_client.set(_key(wrong_type), "not a hash", ex=60)

    refused = capacity_cache_refresh(controller_ids=[gone, wrong_type, kept], client=redis_client)

    assert refused == 1
    assert not redis_client.exists(_key(gone))
    assert redis_client.get(_key(wrong_type)) == b"not a hash"
    assert _hash(redis_client, kept)["health"] == "healthy"
    redis_client.delete(_key(wrong_type))


def test_handlers_have_no_capacity_hash(settings, redis_client):
    settings.HEARTBEAT_FLUSH_INTERVAL_MS = 5000
    handler = make_handler(health=HealthStatus.HEALTHY)
    recorder = HeartbeatRecorder(HANDLERS)
    try:
        recorder.remember(handler.pk, HealthStatus.HEALTHY)
        recorder.record(Beat(handler.pk, HealthStatus.HEALTHY, {"current_streams": 4}))
        assert recorder.flush() == 1
    finally:
        recorder.stop(timeout=5)
    assert not redis_client.exists(_key(handler.pk))


def test_an_unreachable_redis_fails_open_logs_once_and_recovers(recorder, redis_client, settings, tmp_path,
                                                                monkeypatch, caplog):
    controller_id = _controller(redis_client, health=HealthStatus.HEALTHY)
    recorder.remember(controller_id, HealthStatus.HEALTHY)
    reachable = settings.REDIS_URL
    settings.REDIS_URL = f"unix://{tmp_path}/nobody-listens.sock"
    monkeypatch.setattr(heartbeats, "CAPACITY_CACHE_RETRY_SECONDS", 0.0)  # every flush tries again

    with caplog.at_level(logging.WARNING, logger="controllers.heartbeats"):
        for meetings in (1, 2):
            recorder.record(Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": meetings}))
            assert recorder.flush() == 1  # the beats are written all the same
            assert MeetingController.objects.get(pk=controller_id).current_meetings == meetings
        assert caplog.text.count("capacity cache refresh failed (ConnectionError)") == 1

        settings.REDIS_URL = reachable
        recorder.record(Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": 3}))
        assert recorder.flush() == 1

    assert "capacity cache refresh recovered" in caplog.text
    assert _hash(redis_client, controller_id)["current_meetings"] == "3"


def test_a_redis_that_never_answers_costs_a_flush_one_socket_timeout_then_is_skipped(recorder, redis_client,
                                                                                      settings):
    controller_id = _controller(redis_client, health=HealthStatus.HEALTHY)
    recorder.remember(controller_id, HealthStatus.HEALTHY)
    # Takes connections into the kernel's backlog and never reads or answers; accept() counts them afterwards.
    silent = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent.setblocking(False)
    settings.REDIS_URL = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
    settings.REDIS_SOCKET_TIMEOUT_SECONDS = 0.2

    def connections_made() -> int:
        made = 0
        while True:
            try:
                silent.accept()[0].close()
            except BlockingIOError:
                return made
            made += 1

    try:
        recorder.record(Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": 1}))
        started = time.monotonic()
        assert recorder.flush() == 1
        first = time.monotonic() - started
        first_connections = connections_made()

        recorder.record(Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": 2}))
        assert recorder.flush() == 1
        second_connections = connections_made()
    finally:
        silent.close()

    # The first flush waits out the socket timeout (the upper bound is slack for a loaded machine); the second,
    # inside the pause, does not even connect.
    assert 0.2 <= first < 2.0
    assert first_connections >= 1 and second_connections == 0
    assert MeetingController.objects.get(pk=controller_id).current_meetings == 2


def test_a_refresh_larger_than_a_script_batch_writes_every_hash_in_batches(redis_client, monkeypatch):
    monkeypatch.setattr(capacity_cache, "CAPACITY_SCRIPT_BATCH", 2)
    kept = [_controller(redis_client, max_meetings=number) for number in range(1, 5)]
    gone = f"mc-cache-gone-{uuid.uuid4().hex[:12]}"
    redis_client.hset(_key(gone), "health", "healthy")

    assert capacity_cache_refresh(controller_ids=[*kept[:2], gone, *kept[2:]], client=redis_client) == 0

    assert [_hash(redis_client, controller_id)["max_meetings"] for controller_id in kept] == ["1", "2", "3", "4"]
    assert not redis_client.exists(_key(gone))


def test_a_refresh_probes_its_controllers_by_key_instead_of_reading_the_fleet(redis_client, monkeypatch):
    # bench 1's fleet, a flush's 300 of them: given a join, the planner may hash the whole table instead.
    template = _controller(redis_client)
    copy_members("meeting_controllers", "controller_id", template, prefix=f"{template}-", count=19999)
    plans = record_plans(monkeypatch, capacity_cache)
    ids = [f"{template}-{number:05d}" for number in range(1, 20000, 67)]

    assert capacity_cache_refresh(controller_ids=ids, client=redis_client) == 0

    [plan] = plans
    assert "Seq Scan on meeting_controllers" not in plan, plan
    assert re.search(r"Index Scan using meeting_controllers_\S+ on meeting_controllers", plan), plan
    assert _hash(redis_client, ids[-1])["max_meetings"] == str(MeetingController.objects.get(pk=template).max_meetings)
    redis_client.delete(*(_key(controller_id) for controller_id in ids))


def test_a_flush_writes_steady_hashes_from_its_statement_and_reads_the_others_back(recorder, redis_client, operator,
                                                                                   monkeypatch):
    # Steady beats' hashes come back with the write, in documents of at most CAPACITY_SCRIPT_BATCH controllers
    # (one script call each); a member an operator drained meanwhile, and one whose row is gone, are refreshed
    # from the database after the commit.
    monkeypatch.setattr(beats_module, "CAPACITY_SCRIPT_BATCH", 2)
    steady = [_controller(redis_client, health=HealthStatus.HEALTHY, max_meetings=number) for number in range(1, 6)]
    drained = _controller(redis_client, health=HealthStatus.HEALTHY)
    gone = _controller(redis_client, health=HealthStatus.HEALTHY)
    for controller_id in (*steady, drained, gone):
        recorder.remember(controller_id, HealthStatus.HEALTHY)
        recorder.record(Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": 1}))
    redis_client.hset(_key(gone), "health", "healthy")
    controller_drain(controller_id=drained, actor_user_id=operator.user_id)
    MeetingController.objects.filter(pk=gone).delete()
    statement_documents: list[str] = []

    def recording_write(*, documents: Iterable[str], client: redis.Redis) -> int:
        documents = list(documents)
        statement_documents.extend(documents)
        return capacity_cache.capacity_cache_write(documents=documents, client=client)

    monkeypatch.setattr(heartbeats, "capacity_cache_write", recording_write)

    assert recorder.flush() == 7

    assert len(statement_documents) == 3  # the five steady hashes, two per document
    assert [_hash(redis_client, controller_id)["max_meetings"] for controller_id in steady] == ["1", "2", "3", "4", "5"]
    assert {_hash(redis_client, controller_id)["current_meetings"] for controller_id in steady} == {"1"}
    assert _hash(redis_client, drained)["health"] == "draining"
    assert not redis_client.exists(_key(gone))
