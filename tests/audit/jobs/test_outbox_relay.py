"""The outbox relay against the real Redis: the events stream, the controller capacity hash with its TTL,
failures with backoff, poison rows, and two relays at once."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta

import pytest
import redis
from celery.exceptions import Retry
from django.db import connection

from audit.models import AuditLog, OutboxEvent
from audit.relay import outbox_relay
from audit.services import outbox_events_retry
from audit.tasks import relay_outbox
from controllers.capacity_cache import CAPACITY_TTL_SECONDS
from controllers.models import HealthStatus, MeetingController
from controllers.services.operations import controller_mark_unhealthy
from darktower.redis import _client as _redis
from tests.factories import make_controller
from tests.fixtures.jobs import ago


def _capacity_key(controller_id: str) -> str:
    return f"controller:{controller_id}:capacity"


def _event(aggregate_type: str, aggregate_id: str, event_type: str, **payload) -> OutboxEvent:
    return OutboxEvent.objects.create(
        aggregate_type=aggregate_type, aggregate_id=aggregate_id, event_type=event_type, payload=payload
    )


def _controller(redis_client, **extra) -> MeetingController:
    controller = make_controller(**extra)
    redis_client.delete(_capacity_key(controller.controller_id))  # a key left by an earlier run
    return controller


@pytest.mark.django_db
def test_publishes_to_the_stream_and_refreshes_the_capacity_hash(redis_client, event_stream):
    controller = _controller(
        redis_client, health=HealthStatus.DEGRADED, max_meetings=120, current_meetings=7, max_participants=900,
        current_participants=55,
    )
    MeetingController.objects.filter(pk=controller.pk).update(last_heartbeat_at=ago(seconds=3))
    controller.refresh_from_db()
    first = _event("controller", controller.controller_id, "controller_unhealthy", region="us-east-1")
    second = _event("meeting", "5f0c", "meeting_assigned", controller_id=controller.controller_id)

    result = outbox_relay()

    assert result.processed == [first.id, second.id] and result.failed == []
    entries = event_stream.entries()
    assert [entry["outbox_id"] for entry in entries] == [str(first.id), str(second.id)]
    assert entries[0]["event_type"] == "controller_unhealthy"
    assert entries[0]["aggregate_type"] == "controller"
    assert entries[0]["aggregate_id"] == controller.controller_id
    assert json.loads(entries[0]["payload"]) == {"region": "us-east-1"}
    assert entries[1]["aggregate_type"] == "meeting"

    stored = redis_client.hgetall(_capacity_key(controller.controller_id))
    capacity = {key.decode(): value.decode() for key, value in stored.items()}
    assert capacity == {
        "max_meetings": "120", "current_meetings": "7", "max_participants": "900", "current_participants": "55",
        "health": "degraded", "last_update": str(int(controller.last_heartbeat_at.timestamp())),
    }
    assert 0 < redis_client.ttl(_capacity_key(controller.controller_id)) <= CAPACITY_TTL_SECONDS

    for event in (first, second):
        event.refresh_from_db()
        assert event.processed_at is not None and event.attempts == 1 and event.last_error is None
    # Nothing is published twice.
    assert outbox_relay().processed == []
    assert len(event_stream.entries()) == 2


@pytest.mark.django_db
def test_both_spellings_of_the_controller_aggregate_refresh_the_capacity_hash(redis_client, event_stream):
    # The sweep and the drain deadline write `controller`; operator actions have written `meeting_controller`.
    first = _controller(redis_client, health=HealthStatus.UNHEALTHY)
    second = _controller(redis_client, health=HealthStatus.DRAINING)
    _event("controller", first.controller_id, "controller_unhealthy")
    _event("meeting_controller", second.controller_id, "controller_draining")

    assert len(outbox_relay().processed) == 2

    assert redis_client.hget(_capacity_key(first.controller_id), "health") == b"unhealthy"
    assert redis_client.hget(_capacity_key(second.controller_id), "health") == b"draining"
    assert 0 < redis_client.ttl(_capacity_key(second.controller_id)) <= CAPACITY_TTL_SECONDS


@pytest.mark.django_db
def test_an_operators_mark_unhealthy_reaches_the_capacity_hash(redis_client, event_stream, operator):
    controller = _controller(redis_client, health=HealthStatus.HEALTHY)
    redis_client.hset(_capacity_key(controller.controller_id), "health", "healthy")

    controller_mark_unhealthy(controller_id=controller.controller_id, actor_user_id=operator.user_id)
    outbox_relay()

    assert redis_client.hget(_capacity_key(controller.controller_id), "health") == b"unhealthy"
    assert [entry["event_type"] for entry in event_stream.entries()] == ["controller_unhealthy"]


@pytest.mark.django_db
def test_an_event_about_a_deleted_controller_removes_its_capacity(redis_client, event_stream):
    controller = _controller(redis_client)
    redis_client.hset(_capacity_key(controller.controller_id), "health", "healthy")
    controller_id = controller.controller_id
    controller.delete()
    _event("controller", controller_id, "controller_deleted")

    outbox_relay()

    assert not redis_client.exists(_capacity_key(controller_id))
    assert [entry["event_type"] for entry in event_stream.entries()] == ["controller_deleted"]


@pytest.mark.django_db
def test_a_failing_event_backs_off_exponentially_and_does_not_hold_up_the_others(redis_client, event_stream):
    controller = _controller(redis_client)
    redis_client.set(_capacity_key(controller.controller_id), "not a hash")  # HSET fails with WRONGTYPE
    broken = _event("controller", controller.controller_id, "controller_unhealthy")
    fine = _event("meeting", "m1", "meeting_created")

    result = outbox_relay()

    assert result.failed == [broken.id] and result.processed == [fine.id]
    broken.refresh_from_db()
    assert broken.processed_at is None and broken.failed_at is None and broken.attempts == 1
    assert "WRONGTYPE" in broken.last_error
    assert broken.next_attempt_at - broken.last_attempt_at == timedelta(seconds=2)
    # Backing off: the next run leaves it alone.
    assert outbox_relay().failed == []
    broken.refresh_from_db()
    assert broken.attempts == 1

    OutboxEvent.objects.filter(pk=broken.pk).update(next_attempt_at=ago(seconds=1))
    outbox_relay()
    broken.refresh_from_db()
    assert broken.attempts == 2
    assert broken.next_attempt_at - broken.last_attempt_at == timedelta(seconds=4)

    # Once the cause is gone it goes through, once.
    redis_client.delete(_capacity_key(controller.controller_id))
    OutboxEvent.objects.filter(pk=broken.pk).update(next_attempt_at=ago(seconds=1))
    assert outbox_relay().processed == [broken.id]
    assert [entry["outbox_id"] for entry in event_stream.entries()].count(str(broken.id)) == 1


@pytest.mark.django_db
def test_an_event_becomes_poison_after_the_maximum_attempts(redis_client, settings, caplog):
    settings.OUTBOX_MAX_ATTEMPTS = 3
    controller = _controller(redis_client)
    redis_client.set(_capacity_key(controller.controller_id), "not a hash")
    event = _event("controller", controller.controller_id, "controller_unhealthy")

    poisoned = []
    for _ in range(3):
        OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=ago(seconds=1))
        with caplog.at_level("ERROR", logger="audit.relay"):
            poisoned += outbox_relay().poisoned

    event.refresh_from_db()
    assert poisoned == [event.id]
    assert event.attempts == 3 and event.failed_at is not None and event.processed_at is None
    assert "gave up after 3 attempts" in caplog.text
    OutboxEvent.objects.filter(pk=event.pk).update(next_attempt_at=ago(seconds=1))
    assert outbox_relay().failed == []
    event.refresh_from_db()
    assert event.attempts == 3
    redis_client.delete(_capacity_key(controller.controller_id))


@pytest.mark.django_db
def test_an_operator_retries_a_poison_event_and_it_goes_through(redis_client, event_stream, operator):
    poison = _event("meeting", "m1", "meeting_created")
    done = _event("meeting", "m2", "meeting_created")
    OutboxEvent.objects.filter(pk=poison.pk).update(attempts=10, failed_at=ago(hours=1), last_error="boom")
    OutboxEvent.objects.filter(pk=done.pk).update(processed_at=ago(hours=1), attempts=1)

    assert outbox_events_retry(event_ids=[poison.pk, done.pk], actor_user_id=operator.user_id) == 1

    poison.refresh_from_db()
    assert (poison.attempts, poison.failed_at, poison.next_attempt_at, poison.last_error) == (0, None, None, "boom")
    audit = AuditLog.objects.get(event_type="outbox_event_retried")
    assert (audit.target_id, audit.actor_user_id) == (str(poison.pk), operator.user_id)
    assert audit.metadata["was_poison"] is True
    assert outbox_relay().processed == [poison.pk]
    assert [entry["outbox_id"] for entry in event_stream.entries()] == [str(poison.pk)]


@pytest.mark.django_db
def test_an_unreachable_redis_leaves_every_row_untouched_and_the_task_retries(settings, tmp_path, caplog):
    settings.REDIS_URL = f"unix://{tmp_path}/nobody-listens.sock"
    _redis.cache_clear()
    event = _event("meeting", "m1", "meeting_created")
    try:
        with pytest.raises(redis.ConnectionError):
            outbox_relay()
        # The outage is nobody's row's fault: the task retries with backoff instead of charging attempts,
        # and once its retries are spent it fails, logged.
        with pytest.raises(Retry):
            relay_outbox.apply(throw=True)
        with caplog.at_level("WARNING", logger="darktower.tasks"):
            assert relay_outbox.apply().failed()
    finally:
        _redis.cache_clear()
    assert caplog.text.count("task audit.tasks.relay_outbox will retry") == relay_outbox.max_retries
    assert "task audit.tasks.relay_outbox failed: ConnectionError" in caplog.text

    event.refresh_from_db()
    assert event.attempts == 0 and event.processed_at is None and event.last_error is None


@pytest.mark.django_db(transaction=True)
def test_two_relays_at_once_never_publish_a_row_twice(redis_client, event_stream):
    events = [_event("meeting", f"m{number}", "meeting_created") for number in range(60)]
    barrier = threading.Barrier(2)
    results, errors = [], []

    def relay() -> None:
        try:
            barrier.wait(timeout=10)
            results.append(outbox_relay(batch_size=7))
        except Exception as exc:  # surfaced below: an exception in a thread would otherwise vanish
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=relay) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    expected = {event.id for event in events}
    published = Counter(int(entry["outbox_id"]) for entry in event_stream.entries())
    assert set(published) == expected and set(published.values()) == {1}
    processed = [event_id for result in results for event_id in result.processed]
    assert sorted(processed) == sorted(expected)
    assert not OutboxEvent.objects.filter(processed_at__isnull=True).exists()
