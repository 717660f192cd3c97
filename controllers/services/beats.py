"""Beats: MC heartbeats and MH load reports, written by one set-based statement for one or many members.

The gRPC hot path coalesces beats in memory and writes a batch every HEARTBEAT_FLUSH_INTERVAL_MS
(controllers.heartbeats); a beat that may change health is written before it is answered, together with the other
such beats waiting at that moment. Either way one statement
(controllers.services.flush_sql) computes each member's new state from the state its row is in
(controllers.health_rules), and every transition gets its transition, audit and outbox rows in the same
transaction (one INSERT each for the whole batch); a beat that changes no state writes none of them. A beat is
written only while its sender owns the member (controllers.services.ownership).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
from django.conf import settings
from django.db import connection, transaction

from audit.models import ActorType
from audit.services import AuditEntry, audit_record_many, outbox_enqueue_many
from controllers.capacity_cache import CAPACITY_SCRIPT_BATCH
from controllers.health_rules import RECOVERING_STATES, beat_is_steady, recovery_report
from controllers.members import HealthChange, MemberKind
from controllers.services.flush_sql import BEATS_STATEMENTS
from controllers.services.health import RecoveryReport, heartbeat_recovery
from darktower.db import server_bound_cursor


@dataclass(frozen=True)
class Beat:
    """One heartbeat or load report: the member, what it reported, and its beat columns (None = unchanged)."""

    member_id: str
    reported: str
    values: dict[str, int | float | None]
    # time.monotonic() when the GC received it: a coalesced beat is written up to a flush interval later, and the
    # assignments made in between are not in its report (in-flight accounting, see controllers.services.flush_sql).
    received_at: float = field(default_factory=time.monotonic)
    # The credential that sent it (the token's subject): written only while that credential owns the member.
    # None: the GC's own code, which needs no owner.
    client_id: str | None = None


@dataclass(frozen=True)
class FlushOutcome:
    """What a batch write tells a caller that tracks its members' states (beats_flush)."""

    # The members whose state moved, waits for the recovery gate, or is not the one the caller knew.
    outcomes: list[HealthChange]
    # The members without a row.
    missing: list[str]
    # Controllers: the capacity hashes of the members written and not among the outcomes, as documents for
    # audit.relay.capacity_cache_write (the outcomes' and the missing members' hashes are the caller's to refresh).
    capacity_documents: list[str] = field(default_factory=list)


def beats_record(*, kind: MemberKind, beats: Sequence[Beat]) -> list[HealthChange]:
    """Write beats (at most one per member) in one transaction, with database time as `last_heartbeat_at`.

    One set-based statement applies every beat; pending and unhealthy members that reported well then go
    through the recovery gate (heartbeat_recovery) in the same transaction. Returns one outcome per member
    that exists (a member id without a row is left out), from its state before to its state after. Every
    transition has its controller_health_transitions row, an audit row (actor_type service) and an outbox event
    (`<kind>_<new state>`, reason `heartbeat`).
    """
    return beats_flush(kind=kind, beats=beats, known={}).outcomes


def beats_flush(*, kind: MemberKind, beats: Sequence[Beat], known: Mapping[str, str | None]) -> FlushOutcome:
    """beats_record for a caller that tracks the state of each member (`known`: member id -> the state it
    believes, None when it does not know): the outcomes are only those of the members that moved, wait for the
    recovery gate, or are not in the state known; the members without a row are listed apart."""
    if not beats:
        return FlushOutcome([], [])
    beats = sorted(beats, key=lambda beat: beat.member_id)
    received = time.monotonic()
    params: dict[str, Any] = {
        # A beat's values hold its kind's beat columns (one left out is NULL: unchanged). age: seconds since the
        # beat was received, on this process's clock; the statement subtracts it from now(). orjson: serialising
        # in C keeps the flush's CPU (which holds the GIL the event loop serving beats waits for) small.
        "beats": orjson.dumps([
            dict(beat.values, id=beat.member_id, reported=beat.reported, known=known.get(beat.member_id),
                 client_id=beat.client_id,
                 steady=beat_is_steady(known.get(beat.member_id), beat.reported),
                 age=max(0.0, received - beat.received_at))
            for beat in beats
        ]).decode(),
        "component_type": kind.component_type,
        "actor_type": ActorType.SERVICE.value,
        "actor_user_id": None,
        "drain_deadline": settings.DRAIN_DEFAULT_DEADLINE_SECONDS,
        "capacity_batch": CAPACITY_SCRIPT_BATCH,
    }
    reported = {beat.member_id: str(beat.reported) for beat in beats}
    missing = []
    outcomes = {}
    capacity_documents = []
    with transaction.atomic():
        with server_bound_cursor() as cursor:
            cursor.execute(BEATS_STATEMENTS[kind.table], params)
            for member_id, region, from_status, to_status, capacity_document in cursor.fetchall():
                if member_id is None:
                    capacity_documents.append(capacity_document)
                elif to_status is None:
                    missing.append(member_id)
                else:
                    outcomes[member_id] = HealthChange(member_id, region, from_status, to_status)
        recovering = [
            RecoveryReport(outcome.member_id, report)
            for outcome in outcomes.values()
            if outcome.to_status in RECOVERING_STATES
            and (report := recovery_report(reported[outcome.member_id])) is not None
        ]
        for row in heartbeat_recovery(kind=kind, reports=recovering):
            before = outcomes[row.member_id]
            outcomes[row.member_id] = HealthChange(row.member_id, row.region, before.from_status, row.to_status)
        changes = [outcome for outcome in outcomes.values() if outcome.changed]
        audit_record_many(
            AuditEntry(
                event_type=kind.event(change.to_status),
                action="heartbeat",
                actor_type=ActorType.SERVICE,
                target_type=kind.target_type,
                target_id=change.member_id,
                metadata={
                    "region": change.region,
                    "from_status": change.from_status,
                    "to_status": change.to_status,
                    "reported": reported[change.member_id],
                },
            )
            for change in changes
        )
        # The payload shape of the sweep's and the operator's health events: from these, consumers of the outbox
        # learn that a member became placeable, or reported itself degraded, draining or unhealthy.
        outbox_enqueue_many(
            (
                kind.aggregate_type,
                change.member_id,
                kind.event(change.to_status),
                {
                    "id": change.member_id,
                    "region": change.region,
                    "from_status": change.from_status,
                    "to_status": change.to_status,
                    "reason": "heartbeat",
                },
            )
            for change in changes
        )
    return FlushOutcome(list(outcomes.values()), missing, capacity_documents)


def members_health(
    *, kind: MemberKind, member_ids: Sequence[str] | None = None
) -> dict[str, tuple[str, str | None]]:
    """(health state, owner's client id) of the given members that exist, or of every member (the heartbeat
    cache's refresh)."""
    sql = f"SELECT {kind.pk}, health_status, owner_client_id FROM {kind.table}"  # noqa: S608
    params: dict[str, Any] = {}
    if member_ids is not None:
        sql += f" WHERE {kind.pk} = ANY(%(ids)s)"
        params["ids"] = list(member_ids)
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return {member_id: (state, owner) for member_id, state, owner in cursor.fetchall()}
