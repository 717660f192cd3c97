"""Registration of meeting controllers (MCs) and media handlers (MHs).

Registration is one statement, an UPSERT with its transition, outbox and audit rows: a new member starts `pending`;
re-registration updates endpoints, region and capacity, keeps `created_at`, and moves the member's state by
controllers.health_rules (REREGISTRATION_TRANSITIONS: a restart clears a drain and an unhealthy spell, but an
operator's drain is kept and an unhealthy member inside its hold-down comes back `pending` held).

A member belongs to the credential that registered it (`owner_client_id`, controllers.services.ownership):
registration by another credential changes nothing and is refused (PermissionDenied, a failure audit row), and an
unowned row (older than ownership) is claimed by it. Beats are controllers.services.beats.

Registrations arriving together (a fleet restarting) are written together: controller_register_many and
handler_register_many write each one's statement in one transaction and answer each its own outcome.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cache
from typing import Any

from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, connection, transaction

from audit.models import ActorType, AuditResult
from controllers.health_rules import (
    REGISTER_HOLD_DOWN_SQL,
    reregistration_sql,
)
from controllers.members import CONTROLLERS, HANDLERS, MemberKind
from controllers.models import TransitionReason
from controllers.services.ownership import member_access_refuse
from darktower.errors import DomainError


@dataclass(frozen=True)
class Registration:
    member_id: str
    region: str
    created: bool
    from_status: str | None
    health_status: str
    # Pending inside the hold-down of an earlier unhealthy spell: not promoted before this time.
    hold_down_until: datetime | None = None


# --- registration ---------------------------------------------------------------------------------------

# One statement writes a registration with its transition, outbox and audit rows: a restarting fleet registers all
# its members at once, and each registration is then one round trip (and, outside a caller's transaction, one
# commit). Its parts:
# - `previous`: the row locked first, so that the rows can say which state re-registration left (ON CONFLICT cannot
#   return the old row before PostgreSQL 18), and whether the caller may register it: a row owned by another
#   credential is left as it is (nothing written, no row returned: refused). The aggregate over it in `written`
#   makes it run before the UPSERT: a row this statement has updated can no longer be locked by it, and would
#   look absent.
# - `written`: the UPSERT. A concurrent first registration of the same id is serialised by the unique index; the
#   loser updates the winner's row and reports created = false if both are one credential, and updates nothing
#   (refused) if not. An unowned row (older than ownership) is claimed by its first registration.
# - `outcome`: what was written, beside the row before.
# - `recorded`, `announced`, `audited`: the transition (when the state moved), the outbox event, the audit rows (a
#   claim's first, then the registration's).
_REGISTER_SQL = """
WITH previous AS MATERIALIZED (
    SELECT health_status, owner_client_id FROM {table} WHERE {pk} = %(id)s FOR UPDATE
),
written AS (
    INSERT INTO {table} AS t ({pk}, region, endpoint, grpc_endpoint, webtransport_endpoint, {capacity_columns},
                             health_status, last_heartbeat_at, owner_client_id)
    SELECT %(id)s, %(region)s, %(endpoint)s, %(grpc_endpoint)s, %(webtransport_endpoint)s, {capacity_values},
           'pending', now(), %(client_id)s
    FROM (
        SELECT count(*) AS locked, coalesce(bool_or(%(client_id)s::text IS NOT NULL
               AND p.owner_client_id IS NOT NULL AND p.owner_client_id <> %(client_id)s::text), false) AS refused
        FROM previous p
    ) p
    WHERE NOT p.refused
    ON CONFLICT ({pk}) DO UPDATE SET
        owner_client_id = coalesce(t.owner_client_id, EXCLUDED.owner_client_id),
        region = EXCLUDED.region,
        endpoint = EXCLUDED.endpoint,
        grpc_endpoint = EXCLUDED.grpc_endpoint,
        webtransport_endpoint = EXCLUDED.webtransport_endpoint,
        {capacity_updates},
        health_status = {health_status},
        hold_down_until = {hold_down_until},
        last_heartbeat_at = now()
    WHERE %(client_id)s::text IS NULL OR t.owner_client_id IS NULL OR t.owner_client_id = %(client_id)s::text
    RETURNING t.health_status, (t.xmax = 0) AS created, t.hold_down_until
),
outcome AS MATERIALIZED (
    SELECT w.health_status AS to_status, w.created, w.hold_down_until, p.health_status AS from_status,
           p.health_status IS NOT NULL AND p.owner_client_id IS NULL AND %(client_id)s::text IS NOT NULL AS claimed
    FROM written w LEFT JOIN previous p ON true
),
recorded AS (
    INSERT INTO controller_health_transitions
        (component_type, component_id, region, from_status, to_status, reason, actor_type, metadata)
    SELECT %(component_type)s, %(id)s, %(region)s, o.from_status, o.to_status, %(reason)s, %(actor_type)s,
           jsonb_build_object('client_id', %(client_id)s::text, 'hold_down_until', o.hold_down_until)
    FROM outcome o WHERE o.from_status IS DISTINCT FROM o.to_status
),
announced AS (
    INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type, payload)
    SELECT %(aggregate_type)s, %(id)s, CASE WHEN o.created THEN %(registered)s ELSE %(reregistered)s END,
           jsonb_build_object('id', %(id)s::text, 'region', %(region)s::text, 'from_status', o.from_status,
                              'to_status', o.to_status)
    FROM outcome o
),
audited AS (
    INSERT INTO audit_logs (event_type, action, actor_type, result, target_type, target_id, metadata)
    SELECT event_type, action, %(actor_type)s, %(result)s, %(target_type)s, %(id)s, metadata FROM (
        SELECT 1 AS part, %(claimed_event)s AS event_type, 'claim' AS action,
               jsonb_build_object('client_id', %(client_id)s::text, 'via', 'register') AS metadata
        FROM outcome o WHERE o.claimed
        UNION ALL
        SELECT 2, CASE WHEN o.created THEN %(registered)s ELSE %(reregistered)s END, 'register',
               jsonb_build_object('client_id', %(client_id)s::text, 'region', %(region)s::text,
                                  'from_status', o.from_status, 'to_status', o.to_status,
                                  'hold_down_until', o.hold_down_until, 'grpc_endpoint', %(grpc_endpoint)s::text,
                                  'webtransport_endpoint', %(webtransport_endpoint)s::text) || %(capacity)s::jsonb
        FROM outcome o
    ) rows ORDER BY part
)
SELECT to_status, created, hold_down_until, from_status FROM outcome
"""

# Another credential's member: the lock taken again to name its owner in the refusal's audit row.
_LOCK_SQL = "SELECT health_status, owner_client_id FROM {table} WHERE {pk} = %(id)s FOR UPDATE"

# Controllers: was the drain an operator's? The latest transition into `draining` says
# (idx_health_transitions_component, one probe, only for a draining row). Media handlers have no operator drain.
_OPERATOR_DRAIN_SQL = """coalesce((
    SELECT ht.reason = 'operator' FROM controller_health_transitions ht
    WHERE ht.component_type = 'controller' AND ht.component_id = t.controller_id AND ht.to_status = 'draining'
    ORDER BY ht.created_at DESC, ht.id DESC LIMIT 1
), false)"""


@cache
def _register_sql(kind: MemberKind, *, capacity: tuple[str, ...], insert_only: tuple[str, ...]) -> str:
    inserted = [*capacity, *insert_only]
    return _REGISTER_SQL.format(
        table=kind.table, pk=kind.pk,
        capacity_columns=", ".join(inserted),
        capacity_values=", ".join(f"%({column})s" for column in inserted),
        capacity_updates=", ".join(f"{column} = EXCLUDED.{column}" for column in capacity),
        health_status=reregistration_sql(
            "t.health_status", operator_drain=_OPERATOR_DRAIN_SQL if kind is CONTROLLERS else "false"
        ),
        hold_down_until=REGISTER_HOLD_DOWN_SQL,
    )


def _register_statement(
    *, kind: MemberKind, member_id: str, region: str, endpoint: str, grpc_endpoint: str | None,
    webtransport_endpoint: str | None, capacity: dict[str, int], insert_only: dict[str, int],
    actor_client_id: str | None,
) -> tuple[str, dict[str, Any]]:
    """The registration statement and its parameters."""
    params: dict[str, Any] = {
        "id": member_id, "region": region, "endpoint": endpoint, "grpc_endpoint": grpc_endpoint,
        "webtransport_endpoint": webtransport_endpoint, "hold_down": settings.UNHEALTHY_HOLD_DOWN_SECONDS,
        "client_id": actor_client_id, "capacity": json.dumps(capacity), **capacity, **insert_only,
        "component_type": kind.component_type, "aggregate_type": kind.aggregate_type,
        "target_type": kind.target_type, "reason": TransitionReason.REGISTERED.value,
        "actor_type": ActorType.SERVICE.value, "result": AuditResult.SUCCESS.value,
        "registered": kind.event("registered"), "reregistered": kind.event("reregistered"),
        "claimed_event": kind.event("claimed"),
    }
    return _register_sql(kind, capacity=tuple(capacity), insert_only=tuple(insert_only)), params


def _registered(*, kind: MemberKind, written: Any, member_id: str, region: str, actor_client_id: str | None,
                **_: Any) -> Registration:
    """The registration the statement's row says; no row: refused (PermissionDenied raised), audited."""
    if written is not None:
        to_status, created, hold_down_until, from_status = written
        return Registration(member_id, region, created, from_status, to_status, hold_down_until)
    # Another credential's member, or one that another credential inserted while this call waited: nothing was
    # written; the refusal is audited.
    assert actor_client_id is not None
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL.format(table=kind.table, pk=kind.pk), {"id": member_id})
        previous = cursor.fetchone()
        assert previous is not None
        refused = member_access_refuse(kind=kind, member_id=member_id, client_id=actor_client_id,
                                       owner_client_id=previous[1], action="register")
    raise refused


def _register(*, kind: MemberKind, **call: Any) -> Registration:
    sql, params = _register_statement(kind=kind, **call)
    # One statement is one transaction of its own (outside a caller's): no BEGIN and COMMIT round trips around it.
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        written = cursor.fetchone()
    return _registered(kind=kind, written=written, **call)


# The registration statement's parameters that are not text, with their types (PREPARE names every type).
_PARAMETER_TYPES = {
    "capacity": "jsonb", "hold_down": "double precision", "max_meetings": "integer", "max_participants": "integer",
    "max_streams": "integer", "max_bitrate_mbps": "integer",
}


@cache
def _prepared_register(kind: MemberKind, *, capacity: tuple[str, ...],
                       insert_only: tuple[str, ...]) -> tuple[str, str, str]:
    """(name, PREPARE, EXECUTE) of the registration statement as a prepared statement of the session: a batch
    executes it once per registration, so PostgreSQL plans it once per session instead of once per registration,
    and the client quotes a short EXECUTE instead of parsing the whole statement again for each."""
    sql = _register_sql(kind, capacity=capacity, insert_only=insert_only)
    names = list(dict.fromkeys(re.findall(r"%\((\w+)\)s", sql)))
    name = f"dt_register_{kind.table}"
    types = ", ".join(_PARAMETER_TYPES.get(parameter, "text") for parameter in names)
    prepare = f"PREPARE {name} ({types}) AS " + sql % {parameter: f"${number}" for number, parameter in
                                                          enumerate(names, start=1)}
    execute = f"EXECUTE {name} (" + ", ".join(f"%({parameter})s" for parameter in names) + ")"
    return name, prepare, execute


def _register_pipelined(*, kind: MemberKind, calls: Sequence[dict[str, Any]]) -> list[Registration | DomainError]:
    """Each call's statement (prepared once per session), sent together in pipeline mode (one round trip for them
    all, not one each), inside the caller's transaction; then each call's outcome (a refusal's lock and audit row,
    rare, one by one)."""
    first = calls[0]
    name, prepare, execute = _prepared_register(
        kind, capacity=tuple(first["capacity"]), insert_only=tuple(first["insert_only"])
    )
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_prepared_statements WHERE name = %s", [name])
        if cursor.fetchone() is None:
            cursor.execute(prepare)
    raw = connection.connection
    with connection.wrap_database_errors:
        cursors = []
        with raw.pipeline():
            for call in calls:
                _, params = _register_statement(kind=kind, **call)
                cursor = raw.cursor()
                cursor.execute(execute, params)
                cursors.append(cursor)
        written = []
        for cursor in cursors:
            written.append(cursor.fetchone())
            cursor.close()
    outcomes: list[Registration | DomainError] = []
    for call, row in zip(calls, written, strict=True):
        try:
            outcomes.append(_registered(kind=kind, written=row, **call))
        except DomainError as exc:
            outcomes.append(exc)
    return outcomes


# What a registration outcome is when it fails alone: refused by a rule (DomainError) or by the database.
RegistrationOutcome = Registration | DomainError | DatabaseError


def _register_many(*, kind: MemberKind, calls: Sequence[dict[str, Any]]) -> list[RegistrationOutcome]:
    """Each call's registration in one transaction, in member-id order (two writes that lock the same rows lock them
    in the same order); each call's outcome in the order given. A refused registration (another credential's
    member) is refused alone, its audit row in the same transaction. When the database refuses a row, the
    transaction is rolled back and each call written again in one of its own, so that only that row's caller gets
    the error. An unreachable database fails them all (OperationalError, InterfaceError raised)."""
    order = sorted(range(len(calls)), key=lambda index: calls[index]["member_id"])
    outcomes: dict[int, RegistrationOutcome] = {}
    try:
        with transaction.atomic():
            written = _register_pipelined(kind=kind, calls=[calls[index] for index in order])
        outcomes.update(zip(order, written, strict=True))
    except (OperationalError, InterfaceError):
        raise
    except DatabaseError:
        for index in order:
            try:
                with transaction.atomic():
                    outcomes[index] = _register(kind=kind, **calls[index])
            except DomainError as exc:
                outcomes[index] = exc
            except (OperationalError, InterfaceError):
                raise
            except DatabaseError as exc:
                outcomes[index] = exc
    return [outcomes[index] for index in range(len(calls))]


@dataclass(frozen=True)
class ControllerRegistration:
    """One controller's registration (validated input), as controller_register takes it."""

    controller_id: str
    region: str
    grpc_endpoint: str
    webtransport_endpoint: str | None
    max_meetings: int
    max_participants: int
    actor_client_id: str | None = None


@dataclass(frozen=True)
class HandlerRegistration:
    """One media handler's registration (validated input), as handler_register takes it."""

    handler_id: str
    region: str
    grpc_endpoint: str
    webtransport_endpoint: str
    max_streams: int
    actor_client_id: str | None = None


def _controller_call(registration: ControllerRegistration) -> dict[str, Any]:
    return {
        "member_id": registration.controller_id, "region": registration.region,
        "endpoint": registration.grpc_endpoint, "grpc_endpoint": registration.grpc_endpoint,
        "webtransport_endpoint": registration.webtransport_endpoint,
        "capacity": {"max_meetings": registration.max_meetings, "max_participants": registration.max_participants},
        "insert_only": {}, "actor_client_id": registration.actor_client_id,
    }


def _handler_call(registration: HandlerRegistration) -> dict[str, Any]:
    return {
        "member_id": registration.handler_id, "region": registration.region,
        "endpoint": registration.grpc_endpoint, "grpc_endpoint": registration.grpc_endpoint,
        "webtransport_endpoint": registration.webtransport_endpoint,
        "capacity": {"max_streams": registration.max_streams},
        # The contract carries no bitrate; the column is NOT NULL, and 0 means "not reported".
        "insert_only": {"max_bitrate_mbps": 0}, "actor_client_id": registration.actor_client_id,
    }


def controller_register_many(*, registrations: Sequence[ControllerRegistration]) -> list[RegistrationOutcome]:
    """controller_register for registrations arriving together: one transaction, each its own outcome (a
    Registration, or the error that refused it alone)."""
    return _register_many(kind=CONTROLLERS, calls=[_controller_call(registration) for registration in registrations])


def handler_register_many(*, registrations: Sequence[HandlerRegistration]) -> list[RegistrationOutcome]:
    """handler_register for registrations arriving together (controller_register_many)."""
    return _register_many(kind=HANDLERS, calls=[_handler_call(registration) for registration in registrations])


def controller_register(
    *,
    controller_id: str,
    region: str,
    grpc_endpoint: str,
    webtransport_endpoint: str | None,
    max_meetings: int,
    max_participants: int,
    actor_client_id: str | None = None,
) -> Registration:
    """Register or re-register a meeting controller (validated input); audited as the calling service."""
    return _register(kind=CONTROLLERS, **_controller_call(ControllerRegistration(
        controller_id=controller_id, region=region, grpc_endpoint=grpc_endpoint,
        webtransport_endpoint=webtransport_endpoint, max_meetings=max_meetings, max_participants=max_participants,
        actor_client_id=actor_client_id,
    )))


def handler_register(
    *,
    handler_id: str,
    region: str,
    grpc_endpoint: str,
    webtransport_endpoint: str,
    max_streams: int,
    actor_client_id: str | None = None,
) -> Registration:
    """Register or re-register a media handler (validated input); audited as the calling service."""
    return _register(kind=HANDLERS, **_handler_call(HandlerRegistration(
        handler_id=handler_id, region=region, grpc_endpoint=grpc_endpoint,
        webtransport_endpoint=webtransport_endpoint, max_streams=max_streams, actor_client_id=actor_client_id,
    )))
