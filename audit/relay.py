"""The outbox relay: publishes committed outbox events to Redis, at least once.

Each batch is one transaction: claim pending rows in id order with FOR UPDATE SKIP LOCKED (a second relay
takes other rows, never the same ones), publish them with pipelined Redis commands, then mark each row
processed or record its error. Every event goes to the stream `darktower:events`; an app may add its own
commands to the publication of its events (`relay_effect_register`: the controllers' capacity cache refreshes
a controller's hash with each event about it). The relay uses the process's one Redis client
(darktower.redis).

A row whose publication fails is retried with exponential backoff and becomes poison (failed_at) after
OUTBOX_MAX_ATTEMPTS; the admin shows those. Redis being unreachable is not the rows' fault: the batch is rolled
back untouched and the error propagates (the task retries and the beat runs it again).
If the process dies between publishing and committing, the batch is published again: consumers deduplicate
on the `outbox_id` field.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import Q
from django.db.models.functions import Now
from redis.typing import EncodableT, FieldT

from audit.models import OutboxEvent
from darktower.redis import redis_client

logger = logging.getLogger(__name__)

EVENTS_STREAM = "darktower:events"
# Approximate trimming (MAXLEN ~) costs nothing per XADD; consumers that fall further behind read the database.
EVENTS_STREAM_MAXLEN = 100_000
# What an app adds to the publication of its events (registered from its AppConfig.ready(): the controllers
# app refreshes a controller's capacity hash with each event about it). Given the batch's aggregate ids of its
# types, `prepare` reads what it needs at once and returns the function that queues one event's commands on a
# pipeline; a command error fails only that event, which is then not published to the stream.
RelayQueue = Callable[[Any, str], None]
RelayEffect = Callable[[Collection[str]], RelayQueue]
_effects: dict[str, tuple[frozenset[str], RelayEffect]] = {}


def relay_effect_register(*, name: str, aggregate_types: frozenset[str], prepare: RelayEffect) -> None:
    _effects[name] = (aggregate_types, prepare)


# Delay before the next attempt: BASE * 2^(attempts so far), capped.
BACKOFF_BASE_SECONDS = 2
BACKOFF_MAX_SECONDS = 3600
LAST_ERROR_MAX_CHARS = 1000


@dataclass
class RelayResult:
    processed: list[int] = field(default_factory=list)
    failed: list[int] = field(default_factory=list)
    poisoned: list[int] = field(default_factory=list)


def outbox_relay(*, batch_size: int | None = None, max_batches: int = 20) -> RelayResult:
    """Publish pending events batch by batch until none are left or `max_batches` ran."""
    batch_size = batch_size or settings.OUTBOX_BATCH_SIZE
    result = RelayResult()
    for _ in range(max_batches):
        claimed = _relay_batch(batch_size=batch_size, result=result)
        if claimed < batch_size:
            break
    if result.processed or result.failed:
        logger.info("outbox relay: %d published, %d failed", len(result.processed), len(result.failed))
    return result


def _relay_batch(*, batch_size: int, result: RelayResult) -> int:
    with transaction.atomic():
        # Served by idx_outbox_events_pending (partial on unprocessed, unfailed rows, in id order).
        events = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(processed_at__isnull=True, failed_at__isnull=True)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=Now()))
            .order_by("id")[:batch_size]
        )
        if not events:
            return 0
        errors = _publish(events)
        done = [event.id for event in events if event.id not in errors]
        _mark_processed(done)
        poisoned = _mark_failed(errors)
    result.processed += done
    result.failed += list(errors)
    result.poisoned += poisoned
    for event_id, error in errors.items():
        logger.warning("outbox event %d not published: %s", event_id, error)
    if poisoned:
        logger.error("outbox events gave up after %d attempts: %s", settings.OUTBOX_MAX_ATTEMPTS, poisoned)
    return len(events)


def _publish(events: list[OutboxEvent]) -> dict[int, str]:
    """Publish the batch; return the error of each event that failed.

    Two pipelines, so that an event reaches the stream only once its other effects have succeeded: a failed
    event is retried, and its earlier attempts must not have published it already. A connection error raises
    and rolls the whole claim back; a command error (say WRONGTYPE on one key) fails only its event.
    """
    errors: dict[int, str] = {}
    for aggregate_types, prepare in _effects.values():
        effect_events = [event for event in events if event.aggregate_type in aggregate_types]
        if not effect_events:
            continue
        queue = prepare({event.aggregate_id for event in effect_events})
        pipe = redis_client().pipeline(transaction=False)
        spans = []
        for event in effect_events:
            start = len(pipe.command_stack)
            queue(pipe, event.aggregate_id)
            spans.append((event.id, start, len(pipe.command_stack)))
        _collect_errors(pipe.execute(raise_on_error=False), spans, errors)

    publishable = [event for event in events if event.id not in errors]
    pipe = redis_client().pipeline(transaction=False)
    for event in publishable:
        pipe.xadd(EVENTS_STREAM, _stream_fields(event), maxlen=EVENTS_STREAM_MAXLEN, approximate=True)
    spans = [(event.id, number, number + 1) for number, event in enumerate(publishable)]
    _collect_errors(pipe.execute(raise_on_error=False), spans, errors)
    return errors


def _collect_errors(replies: list[Any], spans: list[tuple[int, int, int]], errors: dict[int, str]) -> None:
    for event_id, start, end in spans:
        failure = next((reply for reply in replies[start:end] if isinstance(reply, Exception)), None)
        if failure is not None:
            errors[event_id] = f"{type(failure).__name__}: {failure}"[:LAST_ERROR_MAX_CHARS]


def _stream_fields(event: OutboxEvent) -> dict[FieldT, EncodableT]:
    return {
        "outbox_id": str(event.id),
        "event_type": event.event_type,
        "aggregate_type": event.aggregate_type,
        "aggregate_id": event.aggregate_id,
        "payload": json.dumps(event.payload, separators=(",", ":"), sort_keys=True),
        "created_at": event.created_at.isoformat(),
    }


def _mark_processed(event_ids: list[int]) -> None:
    if not event_ids:
        return
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE outbox_events SET processed_at = now(), last_attempt_at = now(), attempts = attempts + 1, "
            "next_attempt_at = NULL WHERE id = ANY(%s)",
            [event_ids],
        )


def _mark_failed(errors: dict[int, str]) -> list[int]:
    """Record each failure; returns the ids that reached OUTBOX_MAX_ATTEMPTS and are now poison."""
    if not errors:
        return []
    with connection.cursor() as cursor:
        cursor.execute(
            """
            UPDATE outbox_events o
            SET attempts = o.attempts + 1,
                last_attempt_at = now(),
                last_error = f.error,
                next_attempt_at = now() + make_interval(secs => least(%(cap)s, %(base)s * power(2, o.attempts))),
                failed_at = CASE WHEN o.attempts + 1 >= %(max_attempts)s THEN now() END
            FROM unnest(%(ids)s::bigint[], %(errors)s::text[]) AS f(id, error)
            WHERE o.id = f.id
            RETURNING o.id, o.failed_at IS NOT NULL
            """,
            {
                "ids": list(errors),
                "errors": list(errors.values()),
                "cap": BACKOFF_MAX_SECONDS,
                "base": BACKOFF_BASE_SECONDS,
                "max_attempts": settings.OUTBOX_MAX_ATTEMPTS,
            },
        )
        return sorted(event_id for event_id, poisoned in cursor.fetchall() if poisoned)
