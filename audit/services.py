"""Writes to the audit trail and the outbox. Callers run these inside their own transaction, so the
record commits or rolls back with the change it describes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import connection, transaction

from audit.models import ActorType, AuditLog, AuditResult, OutboxEvent


@dataclass(frozen=True)
class AuditEntry:
    event_type: str
    action: str
    actor_type: str = ActorType.SYSTEM
    result: str = AuditResult.SUCCESS
    actor_user_id: Any = None
    target_type: str | None = None
    target_id: str | None = None
    error_message: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


def audit_record(
    *,
    event_type: str,
    action: str,
    actor_type: str = ActorType.SYSTEM,
    result: str = AuditResult.SUCCESS,
    actor_user_id: Any = None,
    target_type: str | None = None,
    target_id: str | None = None,
    error_message: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> None:
    """Append one audit row. Never pass secrets, tokens or emails in metadata."""
    audit_record_many(
        [
            AuditEntry(
                event_type=event_type,
                action=action,
                actor_type=actor_type,
                result=result,
                actor_user_id=actor_user_id,
                target_type=target_type,
                target_id=target_id,
                error_message=error_message,
                ip_address=ip_address,
                user_agent=user_agent,
                metadata=metadata or {},
            )
        ]
    )


def audit_record_many(entries: Iterable[AuditEntry]) -> int:
    """Append many audit rows in one INSERT (the stale sweep writes one per marked controller)."""
    rows = [
        AuditLog(
            event_type=entry.event_type,
            action=entry.action,
            actor_type=entry.actor_type,
            result=entry.result,
            actor_user_id=entry.actor_user_id,
            target_type=entry.target_type,
            target_id=entry.target_id,
            error_message=entry.error_message,
            ip_address=entry.ip_address,
            user_agent=entry.user_agent,
            metadata=entry.metadata,
        )
        for entry in entries
    ]
    if rows:
        AuditLog.objects.bulk_create(rows)
    return len(rows)


def outbox_enqueue(*, aggregate_type: str, aggregate_id: str, event_type: str, payload: dict[str, Any]) -> None:
    """Announce a change; the outbox relay publishes it after commit, at least once."""
    OutboxEvent.objects.create(
        aggregate_type=aggregate_type, aggregate_id=str(aggregate_id), event_type=event_type, payload=payload
    )


def outbox_enqueue_many(events: Iterable[tuple[str, str, str, dict[str, Any]]]) -> int:
    """(aggregate_type, aggregate_id, event_type, payload) tuples in one INSERT."""
    rows = [
        OutboxEvent(aggregate_type=a_type, aggregate_id=str(a_id), event_type=e_type, payload=payload)
        for a_type, a_id, e_type, payload in events
    ]
    if rows:
        OutboxEvent.objects.bulk_create(rows)
    return len(rows)


def database_now() -> datetime:
    """The database's clock: staleness is always judged by it, never by a client's or this host's."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp()")
        row = cursor.fetchone()
        assert row is not None  # a SELECT without FROM: always one row
        return row[0]


def outbox_events_retry(*, event_ids: Iterable[int], actor_user_id: Any) -> int:
    """Give unpublished events (poison rows, or rows waiting out a backoff) a fresh set of attempts now.

    Processed events are left alone. last_error is kept as the record of what went wrong. One audit row per
    event put back, naming the operator. Returns how many were put back.
    """
    with transaction.atomic():
        retried = list(
            OutboxEvent.objects.filter(pk__in=list(event_ids), processed_at__isnull=True)
            .select_for_update()
            .values_list("id", "event_type", "attempts", "failed_at")
        )
        OutboxEvent.objects.filter(pk__in=[row[0] for row in retried]).update(
            attempts=0, failed_at=None, next_attempt_at=None
        )
        audit_record_many(
            AuditEntry(
                event_type="outbox_event_retried",
                action="retry",
                actor_type=ActorType.USER,
                actor_user_id=actor_user_id,
                target_type="outbox_event",
                target_id=str(event_id),
                metadata={"event_type": event_type, "attempts": attempts, "was_poison": failed_at is not None},
            )
            for event_id, event_type, attempts, failed_at in retried
        )
    return len(retried)
