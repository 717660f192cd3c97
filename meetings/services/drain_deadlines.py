"""A drain's deadline (the periodic job of the bounded drain that controllers.services.drain begins and cancels).

`drains_enforce`: for each draining MC past its deadline, its remaining active assignments
are moved to the target (as many as the target has room for, by the effective load placement uses, and
counted in its in-flight load so placement sees them at once) or ended (`drain_deadline`; the meeting no
longer points at the MC, so the next join reassigns), each recorded, and what they held on the MC is given
back (controllers.services.capacity); the MC then goes `unhealthy` (reason `drain-deadline`) unless it went away
cleanly (no assignments left and no heartbeat for the stale threshold), in which case the drain is simply
complete. An MC made unhealthy by the deadline is not recovered by heartbeats: undrain it first.

Every step is a conditional statement: two runs at once claim different MCs (FOR UPDATE SKIP LOCKED) and a
join racing the job for one meeting either ends that assignment itself or finds it moved.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from functools import partial

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper

from accounts.services.service_tokens import gc_service_token
from audit.models import ActorType
from audit.services import AuditEntry, audit_record_many, outbox_enqueue_many
from controllers.mc_client import MediaHandlerChoice, mc_assign_meeting
from controllers.members import CONTROLLERS
from controllers.models import AVAILABLE_STATES, HealthStatus, TransitionReason
from controllers.services.capacity import PlacementOutcome, PlacementRule, release_cte_sql, unassign_cte_sql
from controllers.services.transitions import changed_cte_sql
from darktower.metrics import ASSIGNMENTS
from darktower.process import gc_id
from meetings.services.assignment import media_handlers_choose, placement_lock_release, placement_lock_try

logger = logging.getLogger(__name__)

END_REASON_DRAIN_DEADLINE = "drain_deadline"
END_REASON_DRAIN_MOVE = "drain_move"


@dataclass(frozen=True)
class DrainEnforced:
    """What the deadline did to one MC."""

    controller_id: str
    moved: list[int] = field(default_factory=list)  # new assignment ids on the target
    ended: list[int] = field(default_factory=list)  # assignment ids ended with drain_deadline
    target_controller_id: str | None = None
    marked_unhealthy: bool = False
    # Left alone this run because a join held them; the next run (or that join) ends them.
    skipped_locked: int = 0


# The MC's transition to unhealthy, recorded by the same statement (controllers.services.transitions).
_BEGIN_SQL = "WITH {ctes} SELECT id, region, from_status, to_status FROM changed"


# One due MC per transaction, claimed so that two runs never work on the same one (idx_..._drain_deadline).
_CLAIM_SQL = """
SELECT controller_id, region, drain_target_controller_id, drain_deadline,
       last_heartbeat_at < now() - make_interval(secs => %(stale)s) AS silent
FROM meeting_controllers
WHERE health_status = 'draining' AND drain_deadline <= now()
ORDER BY drain_deadline
LIMIT 1
FOR UPDATE SKIP LOCKED
"""

# Active assignments of the MC; those a join is changing right now are skipped (that join ends or keeps them).
_ACTIVE_SQL = """
SELECT id, meeting_id, region FROM meeting_assignments
WHERE meeting_controller_id = %(controller_id)s AND ended_at IS NULL
ORDER BY assigned_at, id
FOR UPDATE SKIP LOCKED
"""

_ACTIVE_COUNT_SQL = """
SELECT count(*) FROM meeting_assignments WHERE meeting_controller_id = %(controller_id)s AND ended_at IS NULL
"""

# Room on the target, reserved in the statement that checks it: effective load is the reported
# current_meetings plus the assignments made since that report (in-flight accounting), never above max_meetings.
_RESERVE_SQL = """
WITH room AS (
    SELECT controller_id,
           least(%(wanted)s, max_meetings - current_meetings - assigned_since_heartbeat) AS granted
    FROM meeting_controllers
    WHERE controller_id = %(target)s AND region = %(region)s AND health_status = ANY(%(available)s)
      AND last_heartbeat_at > now() - make_interval(secs => %(stale)s)
    FOR UPDATE
)
UPDATE meeting_controllers mc SET assigned_since_heartbeat = mc.assigned_since_heartbeat + room.granted
FROM room WHERE mc.controller_id = room.controller_id AND room.granted > 0
RETURNING room.granted
"""

# greatest(): an assignment committed after this transaction began has assigned_at later than its now().
# Ending gives back what the assignments held on the draining MC ({released}); ending for good also points the
# meetings away from it ({unassigned}), so the next join reassigns them; a move repoints them itself.
_END_SQL = """
WITH ended AS (
    UPDATE meeting_assignments SET ended_at = greatest(now(), assigned_at), end_reason = %(reason)s
    WHERE id = ANY(%(ids)s) AND ended_at IS NULL
    RETURNING id, meeting_id, region, meeting_controller_id, reserved_participants
), {released}{unassigned}
SELECT id, meeting_id, region, reserved_participants FROM ended
"""
_END_FOR_MOVE_SQL = _END_SQL.format(released=release_cte_sql("ended"), unassigned="")
_END_FOR_GOOD_SQL = _END_SQL.format(released=release_cte_sql("ended"), unassigned=", " + unassign_cte_sql("ended"))

# The moved meetings' old rows are ended by the statement before, so uq_meeting_assignments_active admits these.
# Their participant reservations move with them (the meeting slots were claimed by _RESERVE_SQL).
_MOVE_INSERT_SQL = """
WITH inserted AS (
    INSERT INTO meeting_assignments
        (meeting_id, meeting_controller_id, region, assigned_at, assigned_by_gc_id, reserved_participants,
         media_handler_ids)
    SELECT meeting_id, %(target)s, region, now(), %(gc_id)s, reserved,
           (SELECT old.media_handler_ids FROM meeting_assignments old
            WHERE old.meeting_id = moved.meeting_id AND old.region = moved.region
              AND old.meeting_controller_id = %(controller_id)s
            ORDER BY old.ended_at DESC NULLS LAST, old.id DESC LIMIT 1)
    FROM unnest(%(meeting_ids)s::uuid[], %(regions)s::text[], %(reserved)s::integer[])
        AS moved(meeting_id, region, reserved)
    ON CONFLICT (meeting_id, region) WHERE ended_at IS NULL DO NOTHING
    RETURNING id, meeting_id, region, reserved_participants
), reserved AS (
    UPDATE meeting_controllers
    SET reserved_participants = reserved_participants + (SELECT sum(reserved_participants) FROM inserted)
    WHERE controller_id = %(target)s AND EXISTS (SELECT 1 FROM inserted)
)
SELECT id, meeting_id, region FROM inserted
"""

_REPOINT_MEETINGS_SQL = """
UPDATE meetings SET assigned_controller_id = %(target)s
WHERE meeting_id = ANY(%(meeting_ids)s::uuid[]) AND assigned_controller_id = %(controller_id)s
"""

_COMPLETE_SQL = """
UPDATE meeting_controllers SET drain_deadline = NULL, drain_target_controller_id = NULL
WHERE controller_id = %(controller_id)s AND health_status = 'draining'
"""


def drains_enforce(*, limit: int = 100) -> list[DrainEnforced]:
    """Apply the deadline to every draining MC past it (up to `limit` per run), one transaction per MC.

    With MC_ASSIGN_CALLS, a meeting moves to the target only once the target has accepted it
    (AssignMeetingWithMh, with the meeting's media handlers), asked before the MC's transaction with none open;
    the meetings it refuses are ended instead, and the next join places them. Each MC is then worked on by one
    run at a time, and each meeting asked about stays locked against placement (meeting_place's lock) until the
    move commits, so no join places it elsewhere while the target is being told of it."""
    done: list[DrainEnforced] = []
    if settings.MC_ASSIGN_CALLS:
        return _drains_enforce_asking(limit=limit)
    while len(done) < limit:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute(_CLAIM_SQL, {"stale": settings.HEARTBEAT_STALE_THRESHOLD_SECONDS})
            claimed = cursor.fetchone()
            if claimed is None:
                break
            enforced = _enforce_one(cursor, *claimed)
            _count_moved(enforced)
            done.append(enforced)
    _log_enforced(done)
    return done


def _count_moved(enforced: DrainEnforced) -> None:
    if enforced.moved:
        transaction.on_commit(partial(
            ASSIGNMENTS.labels(PlacementRule.DRAIN_MOVE, PlacementOutcome.ASSIGNED).inc, len(enforced.moved)
        ))


# Due MCs, oldest deadline first; each is then claimed by controller id.
_DUE_SQL = """
SELECT controller_id FROM meeting_controllers
WHERE health_status = 'draining' AND drain_deadline <= now()
ORDER BY drain_deadline LIMIT %(limit)s
"""
_CLAIM_ONE_SQL = """
SELECT controller_id, region, drain_target_controller_id, drain_deadline,
       last_heartbeat_at < now() - make_interval(secs => %(stale)s) AS silent
FROM meeting_controllers
WHERE controller_id = %(controller_id)s AND health_status = 'draining' AND drain_deadline <= now()
FOR UPDATE SKIP LOCKED
"""
# The target's endpoint and the room it has (the effective load placement uses), with the draining MC's active
# assignments in the target's region and their media handlers, oldest first, as many as the room.
_TO_TELL_SQL = """
SELECT t.grpc_endpoint, a.meeting_id, a.region,
       (SELECT coalesce(json_agg(json_build_array(h.handler_id, coalesce(h.webtransport_endpoint, ''),
                                                  coalesce(h.grpc_endpoint, ''))
                                 ORDER BY array_position(a.media_handler_ids, h.handler_id)), '[]'::json)
        FROM media_handlers h WHERE h.handler_id = ANY(a.media_handler_ids))
FROM meeting_controllers d
JOIN meeting_controllers t ON t.controller_id = d.drain_target_controller_id
JOIN LATERAL (
    SELECT meeting_id, region, media_handler_ids FROM meeting_assignments
    WHERE meeting_controller_id = d.controller_id AND ended_at IS NULL AND region = t.region
    ORDER BY assigned_at, id
    LIMIT greatest(t.max_meetings - t.current_meetings - t.assigned_since_heartbeat, 0)
) a ON true
WHERE d.controller_id = %(controller_id)s AND t.health_status = ANY(%(available)s)
  AND t.last_heartbeat_at > now() - make_interval(secs => %(stale)s)
"""


def _drains_enforce_asking(*, limit: int) -> list[DrainEnforced]:
    done: list[DrainEnforced] = []
    with connection.cursor() as cursor:
        cursor.execute(_DUE_SQL, {"limit": limit})
        due = [row[0] for row in cursor.fetchall()]
    for controller_id in due:
        if not _drain_lock_try(controller_id):
            continue  # another run works on it
        locked: list[tuple[uuid.UUID, str]] = []
        try:
            told = _tell_target(controller_id, locked)
            with transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_CLAIM_ONE_SQL, {"controller_id": controller_id,
                                                "stale": settings.HEARTBEAT_STALE_THRESHOLD_SECONDS})
                # _CLAIM_ONE_SQL's row: controller_id, region, target, deadline (set: it is due), silent.
                claimed: tuple[str, str, str | None, datetime, bool] | None = cursor.fetchone()
                if claimed is None:
                    continue
                enforced = _enforce_one(cursor, *claimed, told=told)
                _count_moved(enforced)
                done.append(enforced)
        finally:
            for meeting_id, region in locked:
                placement_lock_release(meeting_id, region)
            _drain_lock_release(controller_id)
    _log_enforced(done)
    return done


def _tell_target(controller_id: str, locked: list[tuple[uuid.UUID, str]]) -> set[uuid.UUID]:
    """Ask the drain target to take each meeting it has room for; the ones it accepted. A meeting being placed
    right now is left out (its join decides). The first refusal or failure ends the asking: the target will not
    take the rest either (full, draining, unhealthy or unreachable), and those meetings are ended instead."""
    with connection.cursor() as cursor:
        cursor.execute(_TO_TELL_SQL, {
            "controller_id": controller_id, "stale": settings.HEARTBEAT_STALE_THRESHOLD_SECONDS,
            "available": [str(state) for state in AVAILABLE_STATES],
        })
        rows = cursor.fetchall()
    told: set[uuid.UUID] = set()
    for endpoint, meeting_id, region, handler_rows in rows:
        if not placement_lock_try(meeting_id, region):
            continue
        locked.append((meeting_id, region))
        handlers = [MediaHandlerChoice(*row) for row in handler_rows] or media_handlers_choose(region)
        if not handlers:
            break
        answer = mc_assign_meeting(endpoint=endpoint, meeting_id=meeting_id, media_handlers=handlers,
                                   token=gc_service_token(), requesting_gc_id=gc_id())
        if not answer.accepted:
            logger.warning("drain target refused meeting %s: %s %s", meeting_id, answer.outcome, answer.reason)
            break
        told.add(meeting_id)
    return told


# Advisory lock namespace of "enforcing the drain deadline of MC X".
_DRAIN_LOCK_CLASS = 0x44540002


def _drain_lock_try(controller_id: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_try_advisory_lock(%s, hashtext(%s))", [_DRAIN_LOCK_CLASS, controller_id])
        return bool(cursor.fetchone()[0])


def _drain_lock_release(controller_id: str) -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_unlock(%s, hashtext(%s))", [_DRAIN_LOCK_CLASS, controller_id])


def _log_enforced(done: list[DrainEnforced]) -> None:
    for row in done:
        logger.info(
            "drain deadline of %s: %d moved to %s, %d ended%s", row.controller_id, len(row.moved),
            row.target_controller_id or "-", len(row.ended), ", marked unhealthy" if row.marked_unhealthy else "",
        )


def _enforce_one(
    cursor: CursorWrapper, controller_id: str, region: str, target: str | None, deadline: datetime, silent: bool,
    told: set[uuid.UUID] | None = None,
) -> DrainEnforced:
    """`told`: the meetings the target accepted, when it is asked (MC_ASSIGN_CALLS); only those move."""
    cursor.execute(_ACTIVE_SQL, {"controller_id": controller_id})
    active = cursor.fetchall()
    movable = [row for row in active if row[1] in told] if told is not None else active
    to_move: list[tuple[int, uuid.UUID, str]] = []
    if target is not None and movable:
        # Assignments are per region; the target takes those of its own region, as many as it has room for.
        by_region: dict[str, list[tuple[int, uuid.UUID, str]]] = {}
        for row in movable:
            by_region.setdefault(row[2], []).append(row)
        for assignment_region, rows in by_region.items():
            cursor.execute(_RESERVE_SQL, {
                "wanted": len(rows), "target": target, "region": assignment_region, "stale":
                settings.HEARTBEAT_STALE_THRESHOLD_SECONDS, "available": [str(state) for state in AVAILABLE_STATES],
            })
            granted = cursor.fetchone()
            to_move += rows[: granted[0] if granted else 0]
    move_ids = {row[0] for row in to_move}
    to_end = [row[0] for row in active if row[0] not in move_ids]

    moved: list[int] = []
    entries: list[AuditEntry] = []
    events: list[tuple[str, str, str, dict[str, object]]] = []
    if to_move:
        cursor.execute(_END_FOR_MOVE_SQL, {"ids": sorted(move_ids), "reason": END_REASON_DRAIN_MOVE})
        ended_for_move = {row[0]: row for row in cursor.fetchall()}
        cursor.execute(_MOVE_INSERT_SQL, {
            "target": target, "gc_id": gc_id(), "controller_id": controller_id,
            "meeting_ids": [row[1] for row in ended_for_move.values()],
            "regions": [row[2] for row in ended_for_move.values()],
            "reserved": [row[3] for row in ended_for_move.values()],
        })
        inserted = cursor.fetchall()
        moved = [row[0] for row in inserted]
        cursor.execute(_REPOINT_MEETINGS_SQL, {
            "target": target, "controller_id": controller_id, "meeting_ids": [row[1] for row in inserted],
        })
        for new_id, meeting_id, assignment_region in inserted:
            payload = {
                "meeting_id": str(meeting_id), "region": assignment_region, "controller_id": target,
                "previous_controller_id": controller_id, "assignment_id": new_id,
                "assigned_by_gc_id": gc_id(), "rule": str(PlacementRule.DRAIN_MOVE),
            }
            events.append(("meeting", str(meeting_id), "meeting_assigned", payload))
            entries.append(AuditEntry(
                event_type="meeting_assigned", action="drain_move", target_type="meeting", target_id=str(meeting_id),
                metadata={key: value for key, value in payload.items() if key != "meeting_id"},
            ))
    ended: list[int] = []
    if to_end:
        cursor.execute(_END_FOR_GOOD_SQL, {"ids": to_end, "reason": END_REASON_DRAIN_DEADLINE})
        for assignment_id, meeting_id, assignment_region, _ in cursor.fetchall():
            ended.append(assignment_id)
            entries.append(AuditEntry(
                event_type="meeting_assignment_ended", action="end_assignment", target_type="meeting",
                target_id=str(meeting_id),
                metadata={"assignment_id": assignment_id, "controller_id": controller_id, "region": assignment_region,
                          "reason": END_REASON_DRAIN_DEADLINE},
            ))

    cursor.execute(_ACTIVE_COUNT_SQL, {"controller_id": controller_id})
    skipped_locked = cursor.fetchone()[0]
    gone_cleanly = not active and not skipped_locked and silent
    marked = False
    if gone_cleanly:
        cursor.execute(_COMPLETE_SQL, {"controller_id": controller_id})
    else:
        ctes = changed_cte_sql(
            CONTROLLERS,
            where="t.controller_id = %(controller_id)s AND t.health_status = 'draining'",
            set_status="'unhealthy'",
        )
        cursor.execute(_BEGIN_SQL.format(ctes=ctes), {
            "controller_id": controller_id, "component_type": CONTROLLERS.component_type,
            "reason": TransitionReason.DRAIN_DEADLINE, "actor_type": ActorType.SYSTEM, "actor_user_id": None,
            "metadata": json.dumps({"drain_deadline": deadline.isoformat(), "moved": len(moved), "ended": len(ended),
                                    "target_controller_id": target}),
        })
        marked = cursor.fetchone() is not None
        if marked:
            events.append(("controller", controller_id, "controller_unhealthy", {
                "id": controller_id, "region": region, "from_status": HealthStatus.DRAINING,
                "to_status": HealthStatus.UNHEALTHY, "reason": "drain_deadline",
            }))
    entries.append(AuditEntry(
        event_type="controller_drain_completed" if gone_cleanly else "controller_drain_deadline",
        action="drain_deadline", target_type="meeting_controller", target_id=controller_id,
        metadata={
            "drain_deadline": deadline.isoformat(), "target_controller_id": target, "moved": len(moved),
            "ended": len(ended), "left_for_concurrent_join": skipped_locked, "marked_unhealthy": marked,
        },
    ))
    audit_record_many(entries)
    outbox_enqueue_many(events)
    return DrainEnforced(controller_id, moved, ended, target, marked, skipped_locked)
