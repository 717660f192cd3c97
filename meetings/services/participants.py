"""Joining and leaving meetings: the client gets the meeting and its MC from the Global Controller, then
connects to the MC with the meeting token issued here."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

from django.conf import settings
from django.db import connection, transaction

from accounts.models import User
from accounts.tokens import IssuedToken, token_issue
from audit.models import ActorType
from audit.services import AuditEntry, audit_record, audit_record_many
from darktower.errors import Conflict, Gone, InvalidInput, NoCapacity, NotFound, PermissionDenied
from meetings.models import LeaveReason, Meeting, MeetingParticipant, MeetingStatus, ParticipantStatus
from meetings.selectors import known_regions, meeting_by_ref_locked
from meetings.services.admission import (
    SEATS_SQL,
    meeting_ban_in_transaction,
    participant_principal,
    seat_refusal,
)
from meetings.services.assignment import (
    ACTIVE_ASSIGNMENT_COLUMNS,
    ACTIVE_ASSIGNMENT_SQL,
    MEETING_CHANGED,
    ActiveRead,
    Assignment,
    PlacementNeeded,
    meeting_assign_in_transaction,
    meeting_place,
    stale_threshold,
)

ROLE_HOST = "host"
ROLE_PARTICIPANT = "participant"
ROLE_GUEST = "guest"


@dataclass(frozen=True)
class JoinResult:
    meeting: Meeting
    participant: MeetingParticipant
    assignment: Assignment
    token: IssuedToken
    # False when a signed-in user already present was given back their open participant (a reload).
    created: bool = True


# What a participant may do in the media session (Dark Tower's MC reads them from the token): members what
# Dark Tower's own GC grants, guests audio and video.
MEMBER_CAPABILITIES = ("audio", "video", "screen_share", "chat")
GUEST_CAPABILITIES = ("video", "audio")


def _meeting_token(participant: MeetingParticipant) -> IssuedToken:
    """The token the MC admits the participant with, in Dark Tower's claim sets: a user's is a meeting token
    (token_type meeting, participant_type member, role host or participant), a guest's a guest token (token_type,
    participant_type and role guest, display_name, waiting_room). Neither names an audience, which the MC's
    validator would refuse; token_type says what they are (accounts.tokens._of_kind). meeting_org_id is the
    deployment's one organization. participant_id, and waiting_room for users too, are ours beside them."""
    common: dict[str, object] = {
        "meeting_id": str(participant.meeting_id), "meeting_org_id": settings.MEETING_ORG_ID,
        "participant_id": str(participant.participant_id),
        # The MC holds a waiting participant in the meeting's waiting room until the host admits it.
        "waiting_room": participant.status == ParticipantStatus.WAITING,
    }
    if participant.role == ROLE_GUEST:
        claims = {**common, "token_type": "guest", "participant_type": "guest", "role": ROLE_GUEST,
                  "display_name": participant.display_name, "capabilities": list(GUEST_CAPABILITIES)}
    else:
        claims = {**common, "token_type": "meeting", "home_org_id": settings.MEETING_ORG_ID,
                  "participant_type": "member", "role": participant.role,
                  "capabilities": list(MEMBER_CAPABILITIES)}
    return token_issue(
        subject=str(participant.participant_id), audience=None, scopes=[],
        lifetime_seconds=settings.JWT_MEETING_TOKEN_LIFETIME_SECONDS, extra_claims=claims,
    )


# One statement after the meeting row is locked: the seats taken (admission.SEATS_SQL, idx_participants_present),
# whether the caller's principal is banned (uq_meeting_bans_meeting_principal), the user's own open participant,
# if any, and the meeting's active assignment in the region (assignment.ACTIVE_ASSIGNMENT_SQL, for
# meeting_assign_in_transaction). Not part of the locking statement: one that waited for the lock would count with
# the snapshot it took before, missing the seat (or the ban) the transaction it waited for has just committed.
_PRESENT_SQL = """
SELECT seats.*, EXISTS (SELECT 1 FROM meeting_bans WHERE meeting_id = %(meeting_id)s AND principal = %(principal)s),
       {columns}, active.*
FROM ({seats}) seats
LEFT JOIN LATERAL (
    SELECT * FROM meeting_participants
    WHERE meeting_id = %(meeting_id)s AND left_at IS NULL AND user_id = %(user_id)s
    ORDER BY joined_at, id LIMIT 1
) mine ON true
LEFT JOIN LATERAL ({active}) active ON true
""".format(  # noqa: S608 -- constants only
    seats=SEATS_SQL.replace("%s", "%(meeting_id)s"),
    columns=", ".join(f"mine.{field.column}" for field in MeetingParticipant._meta.concrete_fields),
    active=ACTIVE_ASSIGNMENT_SQL,
)
_PARTICIPANT_ATTNAMES = [field.attname for field in MeetingParticipant._meta.concrete_fields]

_ACTIVATE_SQL = f"""
UPDATE meetings SET status = '{MeetingStatus.ACTIVE}', actual_start_time = statement_timestamp()
WHERE meeting_id = %s AND status = '{MeetingStatus.SCHEDULED}'
RETURNING {", ".join(MEETING_CHANGED)}
"""  # noqa: S608 -- constants only


@dataclass(frozen=True)
class _Present:
    seats: int
    guest_seats: int
    banned: bool
    participant: MeetingParticipant | None
    active: ActiveRead


def _present(meeting_id: uuid.UUID, region: str, user: User | None, principal: str) -> _Present:
    """The seats taken (all, and by guests), whether `principal` is banned, the user's open participant (the
    earliest), if any, and the meeting's active assignment in `region`."""
    with connection.cursor() as cursor:
        cursor.execute(_PRESENT_SQL, {
            "meeting_id": meeting_id, "user_id": user.pk if user is not None else None, "principal": principal,
            "region": region, "stale": stale_threshold().total_seconds(),
        })
        seats, guest_seats, banned, *columns = cursor.fetchone()
    mine, active = columns[:-ACTIVE_ASSIGNMENT_COLUMNS], tuple(columns[-ACTIVE_ASSIGNMENT_COLUMNS:])
    participant = None
    if mine[0] is not None:
        # from_db without field converters: no column of meeting_participants needs one (no JSON).
        participant = MeetingParticipant.from_db(connection.alias, _PARTICIPANT_ATTNAMES, mine)
    return _Present(seats=seats, guest_seats=guest_seats, banned=banned, participant=participant,
                    active=ActiveRead(active if active[0] is not None else None))


# The participant a join admits, as MeetingParticipant.objects.create writes it (no signal listens to it): raw SQL
# on the join's hot path, where compiling the ORM's INSERT cost more CPU than the database spent on it.
_INSERT_FIELDS = [field for field in MeetingParticipant._meta.concrete_fields if not field.primary_key]
_INSERT_PARTICIPANT_SQL = "INSERT INTO meeting_participants ({columns}) VALUES ({values}) RETURNING id".format(  # noqa: S608
    columns=", ".join(field.column for field in _INSERT_FIELDS), values=", ".join("%s" for _ in _INSERT_FIELDS)
)


def _participant_insert(participant: MeetingParticipant) -> MeetingParticipant:
    """INSERT the new `participant` (every field given, as the ORM would: its Python defaults included)."""
    values = [field.get_db_prep_save(field.pre_save(participant, add=True), connection)
              for field in _INSERT_FIELDS]
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_PARTICIPANT_SQL, values)
        participant.id = cursor.fetchone()[0]
    participant._state.adding = False
    participant._state.db = connection.alias
    return participant


def _must_wait(meeting: Meeting, role: str) -> bool:
    """Guests wait in a meeting with a waiting room, users too when the meeting says so; the host never."""
    if not meeting.waiting_room_enabled or role == ROLE_HOST:
        return False
    return role == ROLE_GUEST or meeting.waiting_room_applies_to_users


# Join attempts around a placement: the first finds that the meeting needs an MC, the second (after
# meeting_place) finds it placed; a third covers an assignment ended in between (a drain, an MC going away).
_JOIN_ROUNDS = 3


def meeting_join(
    *,
    meeting_ref: str,
    region: str,
    user: User | None,
    display_name: str | None = None,
    ip_address: str | None = None,
    user_agent: str | None = None,
    client_version: str | None = None,
) -> JoinResult:
    """Admit a participant (see _join_once). When the meeting has no usable MC in `region` and the MC must be
    asked (MC_ASSIGN_CALLS), the join's transaction is given up before anything is written, meeting_place asks
    MCs with no transaction open, and the join runs again to find the assignment made: the checks (meeting
    ended, full, not for guests) come first every time, so a refused join never places a meeting.

    A region where no MC has ever registered is the client's mistake (InvalidInput naming the known regions),
    not a wait for capacity: it is told apart only once placement found no MC, so a join that gets one pays
    nothing for the check."""
    try:
        return _join_rounds(
            meeting_ref=meeting_ref, region=region, user=user, display_name=display_name, ip_address=ip_address,
            user_agent=user_agent, client_version=client_version,
        )
    except NoCapacity:
        regions = known_regions()
        if region not in regions:
            raise InvalidInput(
                f"Unknown region {region}.",
                fields={"region": [
                    f"No meeting controller has registered in region {region}; "
                    f"known regions: {', '.join(regions) or 'none'}."
                ]},
            ) from None
        raise


def _join_rounds(
    *,
    meeting_ref: str,
    region: str,
    user: User | None,
    display_name: str | None,
    ip_address: str | None,
    user_agent: str | None,
    client_version: str | None,
) -> JoinResult:
    placed: Assignment | None = None
    for _ in range(_JOIN_ROUNDS):
        try:
            result = _join_once(
                meeting_ref=meeting_ref, region=region, user=user, display_name=display_name,
                ip_address=ip_address, user_agent=user_agent, client_version=client_version,
            )
        except PlacementNeeded as needed:
            placed = meeting_place(meeting_id=needed.meeting_id, region=region,
                                   actor_user_id=user.pk if user else None, max_participants=needed.max_participants)
            continue
        if placed is not None and result.assignment.assignment_id == placed.assignment_id:
            # The placement this join made: the answer says so (rule, media handlers) rather than "reused".
            result = dataclasses.replace(result, assignment=placed)
        return result
    raise NoCapacity(f"No meeting controller is available in region {region}.")


def _join_once(
    *,
    meeting_ref: str,
    region: str,
    user: User | None,
    display_name: str | None,
    ip_address: str | None,
    user_agent: str | None,
    client_version: str | None,
) -> JoinResult:
    """Admit a participant (a user, or a guest when `user` is None), assign the meeting an MC in `region`,
    and issue the meeting token the MC accepts.

    The meeting row is locked (FOR NO KEY UPDATE, which does not block the participants' foreign-key
    checks) for the whole join, so concurrent joins cannot both take the last seat (or guest seat): seats are
    counted under the lock, from idx_participants_present. Admissions and bans take the same lock
    (meetings.services.admission), so a ban committed before this join's lock is read by it. The lock also
    means nobody else changes the row until we commit: the meeting returned is the locked row with the join's
    own changes, without reading it again.

    Refused, for everyone but the host: a banned principal (PermissionDenied), a new join into a locked meeting
    (PermissionDenied); for those who take a seat at once, a full meeting or no guest seat left (Conflict).
    Those who must wait (_must_wait) join as `waiting`, take no seat, and get a token saying so.

    A signed-in user who is still present (a page reload, a second tab, a retry without Idempotency-Key) gets
    their open participant back with a fresh token: no second row, no second seat, even in a full meeting.
    Guests cannot be recognised that way; their retries are covered by Idempotency-Key.
    """
    with transaction.atomic():
        meeting = meeting_by_ref_locked(meeting_ref)
        if meeting is None:
            raise NotFound("No such meeting.")
        if meeting.status == MeetingStatus.ENDED:
            raise Gone("The meeting has ended.")
        if user is None:
            if meeting.require_auth:
                raise PermissionDenied("This meeting requires signing in; guests cannot join.")
            if not meeting.allow_guests:
                raise PermissionDenied("This meeting does not admit guests.")
            role = ROLE_GUEST
        else:
            role = ROLE_HOST if meeting.created_by_user_id == user.pk else ROLE_PARTICIPANT
        present = _present(
            meeting.pk, region, user,
            participant_principal(user_id=user.pk if user else None, ip_address=ip_address),
        )
        participant = present.participant
        created = participant is None
        waits = _must_wait(meeting, role)
        if created and role != ROLE_HOST:
            if present.banned:
                raise PermissionDenied("The host removed you from this meeting.")
            if meeting.locked:
                raise PermissionDenied("The meeting is locked; the host admits no new participants.")
            refusal = None if waits else seat_refusal(
                meeting=meeting, seats=present.seats, guest_seats=present.guest_seats, guest=role == ROLE_GUEST
            )
            if refusal is not None:
                raise refusal
        elif created and present.seats >= meeting.max_participants:
            raise Conflict("The meeting is full.")

        audit_entries: list[AuditEntry] = []
        # PlacementNeeded leaves before anything is written: the rollback only gives back the meeting row's lock.
        assignment = meeting_assign_in_transaction(
            meeting_id=meeting.pk, region=region, actor_user_id=user.pk if user else None,
            max_participants=meeting.max_participants, audit_entries=audit_entries, meeting=meeting,
            active=present.active,
        )
        if participant is None:
            participant = _participant_insert(MeetingParticipant(
                meeting=meeting, participant_id=uuid.uuid4(), user=user,
                display_name=display_name or (user.display_name if user else "Guest"), role=role,
                status=ParticipantStatus.WAITING if waits else ParticipantStatus.ADMITTED,
                ip_address=ip_address, user_agent=user_agent, client_version=client_version,
            ))
        if meeting.status == MeetingStatus.SCHEDULED:
            # A new assignment started the meeting already (and updated this copy); a reused one did not.
            _meeting_start(meeting)
        audit_entries.append(AuditEntry(
            event_type="participant_joined" if created else "participant_rejoined", action="join",
            actor_type=ActorType.USER if user else ActorType.API, actor_user_id=user.pk if user else None,
            target_type="meeting", target_id=str(meeting.pk), ip_address=ip_address, user_agent=user_agent,
            metadata={
                "participant_id": str(participant.participant_id), "role": participant.role,
                "status": participant.status, "controller_id": assignment.controller_id, "region": region,
            },
        ))
        audit_record_many(audit_entries)
    # Signed after the commit: the meeting row (and a claimed MC's) stay locked only for the database's own work.
    token = _meeting_token(participant)
    return JoinResult(meeting=meeting, participant=participant, assignment=assignment, token=token, created=created)


def _meeting_start(meeting: Meeting) -> None:
    """Start a scheduled meeting, and bring the locked row's copy up to date."""
    with connection.cursor() as cursor:
        cursor.execute(_ACTIVATE_SQL, [meeting.pk])
        for name, value in zip(MEETING_CHANGED, cursor.fetchone(), strict=True):
            setattr(meeting, name, value)


def participant_token_reissue(*, meeting_id: uuid.UUID, participant_id: uuid.UUID) -> IssuedToken:
    """A fresh meeting token for a participant admitted earlier, for an idempotent replay of its join: the
    stored response keeps no token (it would be a secret at rest, and expired after 5 minutes). Refused once
    the meeting has ended (Gone) or the participant has left (Conflict: a new join is needed)."""
    participant = (
        MeetingParticipant.objects.select_related("meeting")
        .filter(meeting_id=meeting_id, participant_id=participant_id)
        .first()
    )
    if participant is None:
        raise NotFound("No such participant in this meeting.")
    if participant.meeting.status == MeetingStatus.ENDED:
        raise Gone("The meeting has ended.")
    if participant.left_at is not None:
        raise Conflict("This participant has left the meeting; join again with a new Idempotency-Key.")
    return _meeting_token(participant)


# Closes present sessions with their duration. greatest(): a session admitted by a transaction that started after
# this one has joined_at later than this transaction's now().
_CLOSE_SQL = """
UPDATE meeting_participants
SET left_at = greatest(now(), joined_at), leave_reason = %(reason)s,
    total_duration_seconds = greatest(0, floor(extract(epoch FROM now() - joined_at)))::integer
WHERE meeting_id = %(meeting_id)s AND left_at IS NULL
  AND (%(participant_id)s::uuid IS NULL OR participant_id = %(participant_id)s::uuid)
"""


def participants_close(
    *, meeting_id: uuid.UUID, leave_reason: str, participant_id: uuid.UUID | None = None
) -> int:
    """Close the present sessions of a meeting (or of one of its participants) with `leave_reason` and their
    duration; how many were closed. Runs in the caller's transaction; every path that closes a session uses it."""
    with connection.cursor() as cursor:
        cursor.execute(
            _CLOSE_SQL, {"meeting_id": meeting_id, "participant_id": participant_id, "reason": str(leave_reason)}
        )
        return cursor.rowcount


def participant_leave(
    *, meeting_id: uuid.UUID, participant_id: uuid.UUID, actor_user_id: uuid.UUID, leave_reason: str
) -> MeetingParticipant:
    """Close a participant's session with its duration. The participant's own user may leave; the host may
    close anyone's session, and only the host may give the reason `kicked`, which also bans the participant's
    principal from the meeting (meeting_ban_in_transaction) until the host lifts it; the host's own participant
    is never banned. A kick locks the meeting row like a join, so that a join waiting for it reads the ban."""
    if leave_reason not in (LeaveReason.VOLUNTARY, LeaveReason.KICKED, LeaveReason.CONNECTION_LOST):
        raise PermissionDenied(f"{leave_reason} is set by the meeting's own actions.")
    with transaction.atomic():
        hosts = Meeting.objects.filter(pk=meeting_id)
        if leave_reason == LeaveReason.KICKED:
            hosts = hosts.select_for_update(no_key=True)
        host_id = hosts.values_list("created_by_user_id", flat=True).first()
        participant = MeetingParticipant.objects.filter(meeting_id=meeting_id, participant_id=participant_id).first()
        if participant is None:
            raise NotFound("No such participant in this meeting.")
        is_host = host_id == actor_user_id
        if not is_host and participant.user_id != actor_user_id:
            raise PermissionDenied("Only the participant or the host may end this session.")
        if leave_reason == LeaveReason.KICKED and not is_host:
            raise PermissionDenied("Only the host may remove a participant.")
        if not participants_close(meeting_id=meeting_id, participant_id=participant_id, leave_reason=leave_reason):
            raise Conflict("The participant has already left.")
        audit_record(
            event_type="participant_left", action="leave", actor_type=ActorType.USER, actor_user_id=actor_user_id,
            target_type="meeting", target_id=str(meeting_id),
            metadata={"participant_id": str(participant_id), "leave_reason": leave_reason},
        )
        if leave_reason == LeaveReason.KICKED and participant.user_id != host_id:
            meeting_ban_in_transaction(meeting_id=meeting_id, participant=participant, actor_user_id=actor_user_id)
        participant.refresh_from_db()
        return participant
