"""Meetings: create, change settings, end."""

from __future__ import annotations

import secrets
import uuid
from datetime import datetime
from typing import Any

from django.db import IntegrityError, connection, transaction

from accounts.models import User
from audit.models import ActorType
from audit.services import audit_record, outbox_enqueue
from controllers.services.capacity import release_cte_sql, unassign_cte_sql
from darktower.errors import Conflict, Gone, NotFound, PermissionDenied
from meetings.models import DEFAULT_MAX_GUESTS, LeaveReason, Meeting, MeetingStatus

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


# One statement per table, all conditional: the meeting (host, not yet ended), its active assignments (and
# the MCs' counters they held), its present participants.
_END_MEETING_SQL = """
UPDATE meetings SET status = 'ended', ended_at = now()
WHERE meeting_id = %(meeting_id)s AND created_by_user_id = %(actor)s AND status <> 'ended'
RETURNING meeting_id
"""

# Gives back what each assignment held on its MC (in-flight count, reported count, participant reservation) and
# clears the meeting's pointer, in the same statement (controllers.services.capacity).
_END_ASSIGNMENTS_SQL = """
WITH ended AS (
    UPDATE meeting_assignments SET ended_at = greatest(now(), assigned_at), end_reason = %(reason)s
    WHERE meeting_id = %(meeting_id)s AND ended_at IS NULL
    RETURNING meeting_id, meeting_controller_id, reserved_participants
), {released}, {unassigned}
SELECT meeting_controller_id FROM ended
""".format(released=release_cte_sql("ended"), unassigned=unassign_cte_sql("ended"))  # noqa: S608 -- constants only

_CLOSE_PARTICIPANTS_SQL = """
UPDATE meeting_participants
SET left_at = greatest(now(), joined_at), leave_reason = %(reason)s,
    total_duration_seconds = greatest(0, floor(extract(epoch FROM now() - joined_at)))::integer
WHERE meeting_id = %(meeting_id)s AND left_at IS NULL
"""


def meeting_end(*, meeting_id: uuid.UUID, actor_user_id: uuid.UUID) -> Meeting:
    """End a meeting (host only): status ended with ended_at, its assignments ended (reason meeting_ended),
    open participants closed with leave_reason meeting_ended; an outbox `meeting_ended` event tells the MC."""
    params: dict[str, uuid.UUID | str] = {
        "meeting_id": meeting_id, "actor": actor_user_id, "reason": LeaveReason.MEETING_ENDED.value
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_END_MEETING_SQL, params)
        if cursor.fetchone() is None:
            _refuse(meeting_id, actor_user_id, "end")
        cursor.execute(_END_ASSIGNMENTS_SQL, params)
        controllers = sorted({row[0] for row in cursor.fetchall()})
        cursor.execute(_CLOSE_PARTICIPANTS_SQL, params)
        closed = cursor.rowcount
        outbox_enqueue(
            aggregate_type="meeting", aggregate_id=str(meeting_id), event_type="meeting_ended",
            payload={"meeting_id": str(meeting_id), "controller_ids": controllers},
        )
        audit_record(
            event_type="meeting_ended", action="end", actor_type=ActorType.USER, actor_user_id=actor_user_id,
            target_type="meeting", target_id=str(meeting_id),
            metadata={"controller_ids": controllers, "participants_closed": closed},
        )
        return Meeting.objects.get(pk=meeting_id)
