"""Cleanup of meeting data: assignments on unhealthy controllers, and the retention periods of meetings, their
assignments and recordings.

Every job is set-based and conditional and claims its rows with FOR UPDATE SKIP LOCKED, so two runs at once (two
beats, a retry, an operator's `manage.py prune` beside the beat) do each row's work once.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from audit.services import AuditEntry, audit_record_many
from controllers.services.capacity import release_cte_sql, unassign_cte_sql
from darktower.db import RETENTION_BATCH_SIZE, delete_in_batches

logger = logging.getLogger(__name__)

END_REASON_CONTROLLER_UNHEALTHY = "controller_unhealthy"


@dataclass(frozen=True)
class EndedAssignment:
    assignment_id: int
    meeting_id: str
    controller_id: str
    region: str


# Two runs at once (two beats, a retried task): the second waits for the first on the MC rows (see below), then
# claims what is left (SKIP LOCKED, in id order), so each assignment is ended and audited once. A row a join holds
# right now is left for the next run.
# greatest(): an assignment committed by a transaction that started after this one has assigned_at later
# than this transaction's now(); ending it "before" it began would break meeting_assignments_ended_after_assigned.
# Served by idx_controllers_health (unhealthy MCs) and idx_assignments_active_by_mc (their active rows). Gives back
# what each assignment held on its MC and clears the meeting's pointer in the same statement.
_END_UNHEALTHY_SQL = """
WITH claimed AS (
    SELECT a.id
    FROM meeting_assignments a
    JOIN meeting_controllers mc ON mc.controller_id = a.meeting_controller_id
    WHERE mc.health_status = 'unhealthy' AND a.ended_at IS NULL
    ORDER BY a.id
    FOR UPDATE OF a SKIP LOCKED
), ended AS (
    UPDATE meeting_assignments a
    SET ended_at = greatest(now(), a.assigned_at), end_reason = %(reason)s
    FROM claimed
    WHERE a.id = claimed.id
    RETURNING a.id, a.meeting_id, a.meeting_controller_id, a.region, a.reserved_participants
), {released}, {unassigned}
SELECT id, meeting_id, meeting_controller_id, region FROM ended
""".format(released=release_cte_sql("ended"), unassigned=unassign_cte_sql("ended"))  # noqa: S608 -- constants only


# Giving back the load updates several MC rows in one statement, in no set order: two runs (or a run and a
# heartbeat flush, which locks in controller_id order) could lock them in opposite orders and deadlock. Locking
# them first, in controller_id order, makes a second run wait for the first and then find nothing left to end.
_LOCK_UNHEALTHY_MCS_SQL = """
SELECT mc.controller_id
FROM meeting_controllers mc
WHERE mc.health_status = 'unhealthy'
  AND EXISTS (
      SELECT 1 FROM meeting_assignments a WHERE a.meeting_controller_id = mc.controller_id AND a.ended_at IS NULL
  )
ORDER BY mc.controller_id
FOR UPDATE OF mc
"""


def assignments_end_unhealthy() -> list[EndedAssignment]:
    """End every active assignment whose meeting controller is unhealthy, so the next join reassigns the
    meeting. One audit row per ended assignment, in the same transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_LOCK_UNHEALTHY_MCS_SQL)
        cursor.execute(_END_UNHEALTHY_SQL, {"reason": END_REASON_CONTROLLER_UNHEALTHY})
        ended = [EndedAssignment(row[0], str(row[1]), row[2], row[3]) for row in cursor.fetchall()]
        audit_record_many(
            AuditEntry(
                event_type="meeting_assignment_ended",
                action="end_assignment",
                target_type="meeting",
                target_id=row.meeting_id,
                metadata={
                    "assignment_id": row.assignment_id,
                    "controller_id": row.controller_id,
                    "region": row.region,
                    "reason": END_REASON_CONTROLLER_UNHEALTHY,
                },
            )
            for row in ended
        )
    if ended:
        logger.info(
            "ended %d assignment(s) on unhealthy controllers: %s",
            len(ended), ", ".join(sorted({row.controller_id for row in ended})),
        )
    return ended


def assignments_prune_ended(*, dry_run: bool = False, batch_size: int = RETENTION_BATCH_SIZE) -> int:
    """Delete assignments that ended more than RETENTION_ENDED_ASSIGNMENTS_DAYS ago (idx_assignments_ended)."""
    return delete_in_batches(
        table="meeting_assignments", pk="id",
        where="ended_at < now() - make_interval(days => %(days)s)",
        params={"days": settings.RETENTION_ENDED_ASSIGNMENTS_DAYS}, batch_size=batch_size, dry_run=dry_run,
    )


def meetings_prune_ended(*, dry_run: bool = False, batch_size: int = RETENTION_BATCH_SIZE) -> int:
    """Delete meetings that ended more than RETENTION_MEETINGS_DAYS ago; their participants and assignments
    go with them (ON DELETE CASCADE). A meeting that still has recordings waits for recordings_prune:
    deleting it would cascade to recordings younger than RETENTION_RECORDINGS_DAYS."""
    return delete_in_batches(
        table="meetings", pk="meeting_id",
        where=(
            "status = 'ended' AND ended_at < now() - make_interval(days => %(days)s) "
            "AND NOT EXISTS (SELECT 1 FROM recordings r WHERE r.meeting_id = meetings.meeting_id)"
        ),
        params={"days": settings.RETENTION_MEETINGS_DAYS}, batch_size=batch_size, dry_run=dry_run,
    )


def recordings_prune(*, dry_run: bool = False, batch_size: int = RETENTION_BATCH_SIZE) -> int:
    """Delete recordings created more than RETENTION_RECORDINGS_DAYS ago."""
    return delete_in_batches(
        table="recordings", pk="recording_id",
        where="created_at < now() - make_interval(days => %(days)s)",
        params={"days": settings.RETENTION_RECORDINGS_DAYS}, batch_size=batch_size, dry_run=dry_run,
    )
