"""Meetings: create, change settings, end (whichever door asks)."""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction

from accounts.models import User
from audit.models import ActorType, AuditResult
from audit.services import audit_record, outbox_enqueue
from controllers.services.capacity import release_cte_sql, unassign_cte_sql
from darktower.errors import Conflict, Gone, NotFound, PermissionDenied
from meetings.models import DEFAULT_MAX_GUESTS, LeaveReason, Meeting, MeetingStatus
from meetings.services.participants import participants_close

# No 0/o, 1/l/i: codes are read aloud and typed from screens.
CODE_ALPHABET = "abcdefghjkmnpqrstuvwxyz23456789"
CODE_GROUPS = (3, 4, 3)  # abc-defg-hjk: 31^10 (about 8e14) codes
CODE_ATTEMPTS = 5
CODE_CONSTRAINT = "meetings_meeting_code_key"

UPDATABLE_FIELDS = frozenset({
    "display_name", "max_participants", "enable_e2e_encryption", "require_auth", "allow_recording",
    "waiting_room_enabled", "allow_guests", "waiting_room_applies_to_users", "max_guests", "locked",
    "scheduled_start_time",
})


def meeting_code_generate() -> str:
    return "-".join("".join(secrets.choice(CODE_ALPHABET) for _ in range(size)) for size in CODE_GROUPS)


def _violated_constraint(exc: IntegrityError) -> str | None:
    diag = getattr(exc.__cause__, "diag", None)
    return getattr(diag, "constraint_name", None)


def meeting_create(
    *,
    host: User,
    display_name: str,
    max_participants: int = 100,
    enable_e2e_encryption: bool = True,
    require_auth: bool = False,
    allow_recording: bool = False,
    waiting_room_enabled: bool = False,
    allow_guests: bool = False,
    waiting_room_applies_to_users: bool = False,
    max_guests: int = DEFAULT_MAX_GUESTS,
    locked: bool = False,
    scheduled_start_time: datetime | None = None,
) -> Meeting:
    """A scheduled meeting with a fresh meeting_code; a code collision (the unique index says so) retries
    with another code inside a savepoint."""
    with transaction.atomic():
        for _ in range(CODE_ATTEMPTS):
            try:
                with transaction.atomic():
                    meeting = Meeting.objects.create(
                        created_by_user=host, display_name=display_name, meeting_code=meeting_code_generate(),
                        max_participants=max_participants, enable_e2e_encryption=enable_e2e_encryption,
                        require_auth=require_auth, allow_recording=allow_recording,
                        waiting_room_enabled=waiting_room_enabled, allow_guests=allow_guests,
                        waiting_room_applies_to_users=waiting_room_applies_to_users, max_guests=max_guests,
                        locked=locked, scheduled_start_time=scheduled_start_time,
                    )
                break
            except IntegrityError as exc:
                if _violated_constraint(exc) != CODE_CONSTRAINT:
                    raise
        else:
            raise Conflict("Could not allocate a unique meeting code; retry.")
        audit_record(
            event_type="meeting_created", action="create", actor_type=ActorType.USER, actor_user_id=host.pk,
            target_type="meeting", target_id=str(meeting.pk),
            metadata={"meeting_code": meeting.meeting_code, "max_participants": max_participants},
        )
    return meeting


def _refuse(meeting_id: uuid.UUID, actor_user_id: uuid.UUID, action: str) -> None:
    """Why a host-only conditional update matched nothing: missing, not the host, or ended."""
    row = Meeting.objects.filter(pk=meeting_id).values("created_by_user_id", "status").first()
    if row is None:
        raise NotFound("No such meeting.")
    if row["created_by_user_id"] != actor_user_id:
        raise PermissionDenied(f"Only the host may {action} this meeting.")
    if row["status"] == MeetingStatus.ENDED:
        raise Gone("The meeting has ended.")


def meeting_update(*, meeting_id: uuid.UUID, actor_user_id: uuid.UUID, changes: dict[str, Any]) -> Meeting:
    """Change a meeting's settings (host only, not once ended), as one conditional UPDATE."""
    unknown = set(changes) - UPDATABLE_FIELDS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    with transaction.atomic():
        hosted_open = Meeting.objects.filter(pk=meeting_id, created_by_user_id=actor_user_id).exclude(
            status=MeetingStatus.ENDED
        )
        matched = hosted_open.update(**changes) if changes else hosted_open.count()
        if not matched:
            _refuse(meeting_id, actor_user_id, "change")
        if changes:
            audit_record(
                event_type="meeting_updated", action="update", actor_type=ActorType.USER,
                actor_user_id=actor_user_id, target_type="meeting", target_id=str(meeting_id),
                metadata={"fields": sorted(changes)},
            )
        return Meeting.objects.get(pk=meeting_id)


# --- ending a meeting ------------------------------------------------------------------------------------------
#
# One service for both doors: the host ends the whole meeting (REST), or a meeting controller reports that it
# ended in its region (gRPC NotifyMeetingEnded) and the meeting ends once no region runs it any more. Both lock
# the meeting row first, end assignments with one statement that gives back what they held on their MCs, and
# close the meeting with `_meeting_close` (status, participants, outbox event, audit row).

END_REASON_MEETING_ENDED = "meeting_ended"


@dataclass(frozen=True)
class MeetingEndOutcome:
    assignment_ended: bool  # at least one active assignment ended
    meeting_ended: bool  # the meeting went to status ended


# The host's door: the meeting (host, not yet ended) ends at once, whatever still runs it.
_END_HOSTED_MEETING_SQL = """
UPDATE meetings SET status = 'ended', ended_at = now()
WHERE meeting_id = %(meeting_id)s AND created_by_user_id = %(actor)s AND status <> 'ended'
RETURNING meeting_id
"""

# A controller's door: the meeting (ran somewhere, not yet ended) ends once no region runs it.
_END_IDLE_MEETING_SQL = """
UPDATE meetings m SET status = 'ended', ended_at = now()
WHERE m.meeting_id = %(meeting_id)s AND m.status <> 'ended'
  AND EXISTS (SELECT 1 FROM meeting_assignments a WHERE a.meeting_id = m.meeting_id)
  AND NOT EXISTS (SELECT 1 FROM meeting_assignments a WHERE a.meeting_id = m.meeting_id AND a.ended_at IS NULL)
RETURNING m.meeting_id
"""

_LOCK_MEETING_SQL = "SELECT 1 FROM meetings WHERE meeting_id = %(meeting_id)s FOR UPDATE"

# A calling credential (NULL: the host's door or the GC's own code) ends only assignments on MCs it owns (a
# primary-key probe per assignment of the meeting).
_HOSTED_BY_CALLER_SQL = """%(client_id)s::text IS NULL OR EXISTS (
    SELECT 1 FROM meeting_controllers c
    WHERE c.controller_id = a.meeting_controller_id AND c.owner_client_id = %(client_id)s::text)"""

# The meeting's active assignments (in one region, or in all when region is NULL) on MCs the caller owns: ended,
# what each held on its MC given back and the meeting's pointer to it cleared (controllers.services.capacity).
_END_ASSIGNMENTS_SQL = """
WITH ended AS (
    UPDATE meeting_assignments a SET ended_at = greatest(now(), a.assigned_at), end_reason = %(reason)s
    WHERE a.meeting_id = %(meeting_id)s AND a.ended_at IS NULL
      AND (%(region)s::text IS NULL OR a.region = %(region)s::text) AND ({hosted_by_caller})
    RETURNING a.id, a.meeting_id, a.meeting_controller_id, a.reserved_participants
), {released}, {unassigned}
SELECT id, meeting_controller_id FROM ended ORDER BY id
""".format(  # noqa: S608 -- constants only
    released=release_cte_sql("ended"), unassigned=unassign_cte_sql("ended"), hosted_by_caller=_HOSTED_BY_CALLER_SQL,
)

# The ownership guard of a controller's door: did the caller's MCs ever host the meeting in that region (an
# active assignment, or a repeated notification: harmless), or is it hosted elsewhere or nowhere (refused)?
_HOSTED_BEFORE_SQL = f"""
SELECT EXISTS (SELECT 1 FROM meeting_assignments a
               WHERE a.meeting_id = %(meeting_id)s AND a.region = %(region)s AND ({_HOSTED_BY_CALLER_SQL}))
"""  # noqa: S608 -- constants only


def meeting_end(
    *,
    meeting_id: uuid.UUID,
    actor_user_id: uuid.UUID | None = None,
    region: str | None = None,
    actor_client_id: str | None = None,
) -> MeetingEndOutcome:
    """End a meeting, through one of two doors; idempotent where the door allows a repeat.

    - The host (`actor_user_id`, REST): the meeting ends at once (only the host, not once ended: NotFound,
      PermissionDenied, Gone), with every active assignment (reason meeting_ended).
    - A meeting controller (`region`, gRPC NotifyMeetingEnded; `actor_client_id` the calling credential, None
      for the GC's own code): that region's assignment ends, and the meeting once no region runs it. NotFound
      for an unknown meeting. Guard: a credential ends only an assignment on one of its own MCs; a meeting its
      MCs never hosted in that region is refused (PermissionDenied, a failure audit row, nothing changes).

    When the meeting ends: present participants closed (leave_reason meeting_ended), an outbox `meeting_ended`
    event for the MCs that ran it, and a `meeting_ended` audit row, all in the same transaction.
    """
    if (actor_user_id is None) == (region is None):
        raise ValueError("meeting_end: either actor_user_id (the host) or region (a controller)")
    params = {
        "meeting_id": meeting_id, "actor": actor_user_id, "region": region, "client_id": actor_client_id,
        "reason": END_REASON_MEETING_ENDED,
    }
    refused: PermissionDenied | None = None
    with transaction.atomic(), connection.cursor() as cursor:
        if actor_user_id is not None:
            cursor.execute(_END_HOSTED_MEETING_SQL, params)
            if cursor.fetchone() is None:
                _refuse(meeting_id, actor_user_id, "end")
        else:
            cursor.execute(_LOCK_MEETING_SQL, params)
            if cursor.fetchone() is None:
                raise NotFound("unknown meeting")
            refused = _controller_guard(cursor, params)
        if refused is None:
            return _meeting_end_locked(cursor, params)
    raise refused


def _controller_guard(cursor: Any, params: dict[str, Any]) -> PermissionDenied | None:
    """The ownership rule of a controller's door, in front of the end: the refusal (its failure audit row
    written, to commit with the transaction) or None."""
    if params["client_id"] is None:
        return None
    cursor.execute(_HOSTED_BEFORE_SQL, params)
    if cursor.fetchone()[0]:
        return None
    refused = PermissionDenied("the meeting is not hosted by this credential's meeting controllers")
    audit_record(
        event_type="meeting_end_denied", action="end_assignment", actor_type=ActorType.SERVICE,
        result=AuditResult.FAILURE, target_type="meeting", target_id=str(params["meeting_id"]),
        error_message=str(refused.message), metadata={"region": params["region"], "client_id": params["client_id"]},
    )
    return refused


def _meeting_end_locked(cursor: Any, params: dict[str, Any]) -> MeetingEndOutcome:
    """meeting_end's work on the locked meeting row, in its transaction."""
    meeting_id, region, by_host = params["meeting_id"], params["region"], params["actor"] is not None
    cursor.execute(_END_ASSIGNMENTS_SQL, params)
    ended = cursor.fetchall()
    if by_host:
        meeting_ended = True
        controllers = sorted({controller_id for _, controller_id in ended})
    else:
        for assignment_id, controller_id in ended:
            audit_record(
                event_type="meeting_assignment_ended", action="end_assignment", actor_type=ActorType.SERVICE,
                target_type="meeting", target_id=str(meeting_id),
                metadata={
                    "assignment_id": assignment_id, "controller_id": controller_id, "region": region,
                    "reason": END_REASON_MEETING_ENDED, "client_id": params["client_id"],
                },
            )
        cursor.execute(_END_IDLE_MEETING_SQL, params)
        meeting_ended = cursor.fetchone() is not None
        controllers = [controller_id for _, controller_id in ended]
    if meeting_ended:
        closed = participants_close(meeting_id=meeting_id, leave_reason=LeaveReason.MEETING_ENDED)
        outbox_enqueue(
            aggregate_type="meeting", aggregate_id=str(meeting_id), event_type="meeting_ended",
            payload={"meeting_id": str(meeting_id), "controller_ids": controllers},
        )
        if by_host:
            audit_record(
                event_type="meeting_ended", action="end", actor_type=ActorType.USER, actor_user_id=params["actor"],
                target_type="meeting", target_id=str(meeting_id),
                metadata={"controller_ids": controllers, "participants_closed": closed},
            )
        else:
            audit_record(
                event_type="meeting_ended", action="end", actor_type=ActorType.SERVICE,
                target_type="meeting", target_id=str(meeting_id),
                metadata={"region": region, "participants_closed": closed, "client_id": params["client_id"]},
            )
    return MeetingEndOutcome(assignment_ended=bool(ended), meeting_ended=meeting_ended)
