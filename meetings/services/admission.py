"""Who may take a seat in a meeting, as the host decides: the waiting room (admit, deny) and bans (a kick bans
the principal until the host lifts it).

Every change here locks the meeting row FOR NO KEY UPDATE first, as the join does (participants.meeting_join):
joins, admissions and bans of one meeting are serialised on that row, so a seat counted here cannot be taken by a
concurrent join, and a join that waited for a ban's commit reads the ban.
"""

from __future__ import annotations

import uuid

from django.db import connection, transaction

from audit.models import ActorType
from audit.services import audit_record, outbox_enqueue
from darktower.errors import Conflict, Gone, NotFound, PermissionDenied
from meetings.models import LeaveReason, Meeting, MeetingBan, MeetingParticipant, MeetingStatus, ParticipantStatus

ROLE_GUEST = "guest"


def participant_principal(*, user_id: uuid.UUID | None, ip_address: str | None) -> str:
    """Who a ban names: a signed-in user by id; a guest, which has no identity and picks its display name
    freely, by the client address it joins from ("unknown" when the peer has no IP address)."""
    if user_id is not None:
        return f"user:{user_id}"
    return f"guest:{ip_address or 'unknown'}"


# Seats are what admitted, present participants hold; guests among them are capped by meetings.max_guests.
# Served by idx_participants_present.
SEATS_SQL = f"""
SELECT count(*) FILTER (WHERE status = '{ParticipantStatus.ADMITTED}'),
       count(*) FILTER (WHERE status = '{ParticipantStatus.ADMITTED}' AND role = '{ROLE_GUEST}')
FROM meeting_participants WHERE meeting_id = %s AND left_at IS NULL
"""  # noqa: S608 -- constants only


def seat_refusal(*, meeting: Meeting, seats: int, guest_seats: int, guest: bool) -> Conflict | None:
    """Why one more seat cannot be taken (the meeting is full, or no guest seat is left), or None. Counts are
    read under the meeting row's lock."""
    if seats >= meeting.max_participants:
        return Conflict("The meeting is full.")
    if guest and guest_seats >= meeting.max_guests:
        return Conflict("No guest seat is left in this meeting.")
    return None


def _hosted_meeting_locked(meeting_id: uuid.UUID, actor_user_id: uuid.UUID) -> Meeting:
    meeting = Meeting.objects.select_for_update(no_key=True).filter(pk=meeting_id).first()
    if meeting is None:
        raise NotFound("No such meeting.")
    if meeting.created_by_user_id != actor_user_id:
        raise PermissionDenied("Only the host may admit, deny or ban participants of this meeting.")
    if meeting.status == MeetingStatus.ENDED:
        raise Gone("The meeting has ended.")
    return meeting


def _waiting_participant(meeting_id: uuid.UUID, participant_id: uuid.UUID) -> MeetingParticipant:
    participant = MeetingParticipant.objects.filter(meeting_id=meeting_id, participant_id=participant_id).first()
    if participant is None:
        raise NotFound("No such participant in this meeting.")
    if participant.status != ParticipantStatus.WAITING or participant.left_at is not None:
        raise Conflict("This participant is not in the waiting room.")
    return participant


def meeting_ban_in_transaction(
    *, meeting_id: uuid.UUID, participant: MeetingParticipant, actor_user_id: uuid.UUID
) -> bool:
    """Ban the participant's principal from the meeting (inside the caller's transaction, which holds the meeting
    row), with its audit row; False when that principal was banned already."""
    principal = participant_principal(user_id=participant.user_id, ip_address=participant.ip_address)
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO meeting_bans (ban_id, meeting_id, principal, participant_id, display_name, "
            "banned_by_user_id, created_at) VALUES (gen_random_uuid(), %s, %s, %s, %s, %s, now()) "
            "ON CONFLICT (meeting_id, principal) DO NOTHING RETURNING ban_id",
            [meeting_id, principal, participant.participant_id, participant.display_name, actor_user_id],
        )
        row = cursor.fetchone()
    if row is None:
        return False
    audit_record(
        event_type="participant_banned", action="ban", actor_type=ActorType.USER, actor_user_id=actor_user_id,
        target_type="meeting", target_id=str(meeting_id),
        metadata={"ban_id": str(row[0]), "participant_id": str(participant.participant_id),
                  "kind": principal.split(":", 1)[0]},
    )
    return True


def participant_admit(
    *, meeting_id: uuid.UUID, participant_id: uuid.UUID, actor_user_id: uuid.UUID
) -> MeetingParticipant:
    """The host lets a waiting participant in: it takes a seat, within max_participants and, for a guest,
    max_guests (Conflict when none is left). The MC learns it from the `participant_admitted` event."""
    with transaction.atomic():
        meeting = _hosted_meeting_locked(meeting_id, actor_user_id)
        participant = _waiting_participant(meeting_id, participant_id)
        with connection.cursor() as cursor:
            cursor.execute(SEATS_SQL, [meeting_id])
            seats, guest_seats = cursor.fetchone()
        refusal = seat_refusal(
            meeting=meeting, seats=seats, guest_seats=guest_seats, guest=participant.role == ROLE_GUEST
        )
        if refusal is not None:
            raise refusal
        # Compare-and-set; the meeting row's lock already serialises it with every other admission.
        MeetingParticipant.objects.filter(
            pk=participant.pk, status=ParticipantStatus.WAITING, left_at__isnull=True
        ).update(status=ParticipantStatus.ADMITTED)
        participant.status = ParticipantStatus.ADMITTED
        payload = {"meeting_id": str(meeting_id), "participant_id": str(participant_id)}
        outbox_enqueue(
            aggregate_type="meeting", aggregate_id=str(meeting_id), event_type="participant_admitted", payload=payload
        )
        audit_record(
            event_type="participant_admitted", action="admit", actor_type=ActorType.USER,
            actor_user_id=actor_user_id, target_type="meeting", target_id=str(meeting_id),
            metadata={"participant_id": str(participant_id), "role": participant.role},
        )
    return participant


_DENY_SQL = f"""
UPDATE meeting_participants
SET left_at = greatest(now(), joined_at), leave_reason = '{LeaveReason.DENIED}', total_duration_seconds = 0
WHERE id = %s AND status = '{ParticipantStatus.WAITING}' AND left_at IS NULL
RETURNING left_at
"""  # noqa: S608 -- constants only


def participant_deny(
    *, meeting_id: uuid.UUID, participant_id: uuid.UUID, actor_user_id: uuid.UUID, ban: bool = False
) -> MeetingParticipant:
    """The host turns a waiting participant away: it leaves with leave_reason `denied` (it never held a seat),
    and is banned only when the host says so. The MC learns it from the `participant_denied` event."""
    with transaction.atomic():
        _hosted_meeting_locked(meeting_id, actor_user_id)
        participant = _waiting_participant(meeting_id, participant_id)
        with connection.cursor() as cursor:
            cursor.execute(_DENY_SQL, [participant.pk])
            (participant.left_at,) = cursor.fetchone()
        participant.leave_reason = LeaveReason.DENIED
        participant.total_duration_seconds = 0
        payload = {"meeting_id": str(meeting_id), "participant_id": str(participant_id)}
        outbox_enqueue(
            aggregate_type="meeting", aggregate_id=str(meeting_id), event_type="participant_denied", payload=payload
        )
        audit_record(
            event_type="participant_denied", action="deny", actor_type=ActorType.USER,
            actor_user_id=actor_user_id, target_type="meeting", target_id=str(meeting_id),
            metadata={"participant_id": str(participant_id), "role": participant.role, "ban": ban},
        )
        if ban:
            meeting_ban_in_transaction(meeting_id=meeting_id, participant=participant, actor_user_id=actor_user_id)
    return participant


def meeting_ban_lift(*, meeting_id: uuid.UUID, ban_id: uuid.UUID, actor_user_id: uuid.UUID) -> None:
    """The host lifts a ban: that principal may join again (host only; an ended meeting's bans stay)."""
    with transaction.atomic():
        _hosted_meeting_locked(meeting_id, actor_user_id)
        deleted, _ = MeetingBan.objects.filter(meeting_id=meeting_id, pk=ban_id).delete()
        if not deleted:
            raise NotFound("No such ban in this meeting.")
        audit_record(
            event_type="participant_ban_lifted", action="unban", actor_type=ActorType.USER,
            actor_user_id=actor_user_id, target_type="meeting", target_id=str(meeting_id),
            metadata={"ban_id": str(ban_id)},
        )
