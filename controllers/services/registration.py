"""Registration of meeting controllers (MCs) and media handlers (MHs).

Registration is one atomic UPSERT: a new member starts `pending`; re-registration updates endpoints, region and
capacity, keeps `created_at`, and moves the member's state by controllers.health_rules (REREGISTRATION_TRANSITIONS:
a restart clears a drain and an unhealthy spell, but an operator's drain is kept and an unhealthy member inside its
hold-down comes back `pending` held).

A member belongs to the credential that registered it (`owner_client_id`, controllers.services.ownership):
registration by another credential changes nothing and is refused (PermissionDenied, a failure audit row), and an
unowned row (older than ownership) is claimed by it. Beats are controllers.services.beats.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from audit.models import ActorType
from audit.services import audit_record, outbox_enqueue
from controllers.health_rules import (
    REGISTER_HOLD_DOWN_SQL,
    reregistration_sql,
)
from controllers.members import CONTROLLERS, HANDLERS, MemberKind
from controllers.models import TransitionReason
from controllers.services.ownership import member_access_refuse, member_claim_audit
from controllers.services.transitions import Transition, transitions_record
from darktower.errors import PermissionDenied


@dataclass(frozen=True)
class Registration:
    member_id: str
    region: str
    created: bool
    from_status: str | None
    health_status: str
    # Pending inside the hold-down of an earlier unhealthy spell: not promoted before this time.
    hold_down_until: datetime | None = None


# --- registration ----------------------------------------------------------------------------------------

# The row lock first, so the audit row can say which state re-registration left (ON CONFLICT cannot return
# the old row before PostgreSQL 18), and whether the caller may register it: a row owned by another credential
# is left as it is. A concurrent first registration of the same id is serialised by the unique index; the loser
# updates the winner's row and reports created = false if both are one credential, and updates nothing (no row
# returned: refused) if not. An unowned row (older than ownership) is claimed by its first registration.
_LOCK_SQL = "SELECT health_status, owner_client_id FROM {table} WHERE {pk} = %(id)s FOR UPDATE"

_REGISTER_SQL = """
INSERT INTO {table} AS t ({pk}, region, endpoint, grpc_endpoint, webtransport_endpoint, {capacity_columns},
                         health_status, last_heartbeat_at, owner_client_id)
VALUES (%(id)s, %(region)s, %(endpoint)s, %(grpc_endpoint)s, %(webtransport_endpoint)s, {capacity_values},
        'pending', now(), %(client_id)s)
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
"""

# Controllers: was the drain an operator's? The latest transition into `draining` says
# (idx_health_transitions_component, one probe, only for a draining row). Media handlers have no operator drain.
_OPERATOR_DRAIN_SQL = """coalesce((
    SELECT ht.reason = 'operator' FROM controller_health_transitions ht
    WHERE ht.component_type = 'controller' AND ht.component_id = t.controller_id AND ht.to_status = 'draining'
    ORDER BY ht.created_at DESC, ht.id DESC LIMIT 1
), false)"""


def _register(
    *, kind: MemberKind, member_id: str, region: str, endpoint: str, grpc_endpoint: str | None,
    webtransport_endpoint: str | None, capacity: dict[str, int], insert_only: dict[str, int],
    actor_client_id: str | None,
) -> Registration:
    params: dict[str, Any] = {
        "id": member_id, "region": region, "endpoint": endpoint, "grpc_endpoint": grpc_endpoint,
        "webtransport_endpoint": webtransport_endpoint, "hold_down": settings.UNHEALTHY_HOLD_DOWN_SECONDS,
        "client_id": actor_client_id, **capacity, **insert_only,
    }
    inserted = [*capacity, *insert_only]
    sql = _REGISTER_SQL.format(
        table=kind.table, pk=kind.pk,
        capacity_columns=", ".join(inserted),
        capacity_values=", ".join(f"%({column})s" for column in inserted),
        capacity_updates=", ".join(f"{column} = EXCLUDED.{column}" for column in capacity),
        health_status=reregistration_sql(
            "t.health_status", operator_drain=_OPERATOR_DRAIN_SQL if kind is CONTROLLERS else "false"
        ),
        hold_down_until=REGISTER_HOLD_DOWN_SQL,
    )
    refused: PermissionDenied | None = None
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_LOCK_SQL.format(table=kind.table, pk=kind.pk), {"id": member_id})
        previous = cursor.fetchone()
        written = None
        if not _owned_by_another(previous, actor_client_id):
            cursor.execute(sql, params)
            written = cursor.fetchone()
        if written is None:
            # Another credential's member, or one that another credential inserted while this call waited.
            if previous is None:
                cursor.execute(_LOCK_SQL.format(table=kind.table, pk=kind.pk), {"id": member_id})
                previous = cursor.fetchone()
            assert actor_client_id is not None and previous is not None
            refused = member_access_refuse(kind=kind, member_id=member_id, client_id=actor_client_id,
                                           owner_client_id=previous[1], action="register")
        else:
            registration = _registered(kind=kind, member_id=member_id, region=region, previous=previous,
                                       written=written, grpc_endpoint=grpc_endpoint,
                                       webtransport_endpoint=webtransport_endpoint, capacity=capacity,
                                       actor_client_id=actor_client_id)
    if refused is not None:
        raise refused
    return registration


def _owned_by_another(previous: tuple[str, str | None] | None, client_id: str | None) -> bool:
    """Whether a locked member row (health_status, owner_client_id) belongs to a credential other than the
    caller's (None: the GC's own code, which is not a credential and owns nothing)."""
    return previous is not None and client_id is not None and previous[1] not in (None, client_id)


def _registered(
    *, kind: MemberKind, member_id: str, region: str, previous: tuple[str, str | None] | None,
    written: tuple[str, bool, datetime | None], grpc_endpoint: str | None, webtransport_endpoint: str | None,
    capacity: dict[str, int], actor_client_id: str | None,
) -> Registration:
    """The transition, outbox and audit rows of a registration the UPSERT wrote (in its transaction)."""
    health_status, created, hold_down_until = written
    from_status = previous[0] if previous else None
    if previous is not None and previous[1] is None and actor_client_id is not None:
        member_claim_audit(kind=kind, member_id=member_id, client_id=actor_client_id, via="register")
    if from_status != health_status:
        transitions_record([
            Transition(
                component_type=kind.component_type, component_id=member_id, region=region,
                from_status=from_status, to_status=health_status, reason=TransitionReason.REGISTERED,
                actor_type=ActorType.SERVICE,
                metadata={
                    "client_id": actor_client_id,
                    "hold_down_until": hold_down_until.isoformat() if hold_down_until else None,
                },
            )
        ])
    event_type = kind.event("registered" if created else "reregistered")
    # Announced like every other state change, so the relay refreshes the controller's capacity hash at once.
    outbox_enqueue(
        aggregate_type=kind.aggregate_type, aggregate_id=member_id, event_type=event_type,
        payload={"id": member_id, "region": region, "from_status": from_status, "to_status": health_status},
    )
    audit_record(
        event_type=event_type,
        action="register",
        actor_type=ActorType.SERVICE,
        target_type=kind.target_type,
        target_id=member_id,
        metadata={
            "client_id": actor_client_id,
            "region": region,
            "from_status": from_status,
            "to_status": health_status,
            "hold_down_until": hold_down_until.isoformat() if hold_down_until else None,
            "grpc_endpoint": grpc_endpoint,
            "webtransport_endpoint": webtransport_endpoint,
            **capacity,
        },
    )
    return Registration(member_id, region, created, from_status, health_status, hold_down_until)


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
    return _register(
        kind=CONTROLLERS, member_id=controller_id, region=region, endpoint=grpc_endpoint,
        grpc_endpoint=grpc_endpoint, webtransport_endpoint=webtransport_endpoint,
        capacity={"max_meetings": max_meetings, "max_participants": max_participants}, insert_only={},
        actor_client_id=actor_client_id,
    )


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
    return _register(
        kind=HANDLERS, member_id=handler_id, region=region, endpoint=grpc_endpoint,
        grpc_endpoint=grpc_endpoint, webtransport_endpoint=webtransport_endpoint,
        capacity={"max_streams": max_streams},
        # The contract carries no bitrate; the column is NOT NULL, and 0 means "not reported".
        insert_only={"max_bitrate_mbps": 0},
        actor_client_id=actor_client_id,
    )
