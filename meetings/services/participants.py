"""Joining and leaving meetings: the client gets the meeting and its MC from the Global Controller, then
connects to the MC with the meeting token issued here."""

from __future__ import annotations

import dataclasses
import uuid
from dataclasses import dataclass

import psycopg
from django.conf import settings
from django.db import DatabaseError, connection, transaction

from accounts.models import User
from accounts.tokens import IssuedToken, token_issue
from audit.models import ActorType
from audit.services import AuditEntry, audit_record, audit_record_many
from controllers.services.capacity import PlacementRule
from darktower.db import prepared_cursor
from darktower.errors import (
    Conflict,
    DomainError,
    Gone,
    InvalidInput,
    NoCapacity,
    NotFound,
    PermissionDenied,
    Unauthenticated,
)
from darktower.process import gc_id
from meetings.models import LeaveReason, Meeting, MeetingParticipant, MeetingStatus, ParticipantStatus
from meetings.selectors import known_regions, meeting_ref_lookup
from meetings.services.admission import meeting_ban_in_transaction, participant_principal
from meetings.services.assignment import (
    ACTIVE_ASSIGNMENT_COLUMNS,
    ASSIGNMENT_WINDOW,
    FRESH_READS,
    MEETING_CHANGED,
    ActiveRead,
    Assignment,
    PlacementNeeded,
    assignment_joined,
    meeting_assign_in_transaction,
    meeting_place,
    no_capacity,
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


# The meeting's columns a join reads back: all but metadata (JSON, which needs the field's converter), which stays
# deferred, loaded if ever read. Model.from_db without converters: no other column needs one.
_MEETING_FIELDS = [field for field in Meeting._meta.concrete_fields if field.attname != "metadata"]
_MEETING_ATTNAMES = [field.attname for field in _MEETING_FIELDS]
_PARTICIPANT_FIELDS = list(MeetingParticipant._meta.concrete_fields)
_PARTICIPANT_ATTNAMES = [field.attname for field in _PARTICIPANT_FIELDS]

# The database side of a join in one statement: the meeting_join function (meetings migration 0008, which states
# its rules) locks the meeting row, checks, counts the seats, reuses the active assignment or claims an MC, and
# admits the participant (writing the outbox and audit rows); or, when the MC must be asked (`place` false), answers
# `assign` with nothing written. Bound on the server and prepared once per connection (prepared_cursor), which spares
# PostgreSQL parsing and planning it on every join: every parameter is cast, as psycopg sends text and NULL untyped.
_JOIN_SQL = """
SELECT j.outcome, j.joiner_role, j.is_new, {meeting}, {participant},
       j.a_id, j.a_controller_id, j.a_grpc_endpoint, j.a_webtransport_endpoint, j.a_health_status, j.a_fresh,
       j.a_pending, j.a_media_handlers, j.a_rule, j.a_assigned
FROM {joiner}meeting_join(%(meeting_id)s::uuid, %(meeting_code)s::text, %(region)s::text, {user_id},
                  %(principal)s::text, %(display_name)s::text, %(ip_address)s::inet, %(user_agent)s::text,
                  %(client_version)s::text, %(stale)s::double precision, %(place)s::boolean, %(gc_id)s::text,
                  %(candidates)s::integer, %(per_minute)s::integer, %(window)s::double precision,
                  %(large)s::integer, %(fresh_reads)s::integer) j{where}
"""
_COLUMNS = {
    "meeting": ", ".join(f"(j.m).{field.column}" for field in _MEETING_FIELDS),
    "participant": ", ".join(f"(j.p).{field.column}" for field in _PARTICIPANT_FIELDS),
}
_GUEST_JOIN_SQL = _JOIN_SQL.format(**_COLUMNS, joiner="", user_id="NULL::uuid", where="")
# A signed-in user's join runs the function only for a user row that exists and is active (LATERAL: once per row
# of users found, so never when there is none): no row answered tells a user gone or deactivated since its token
# was issued, with nothing written, and the request needs no read of its own to find it out.
_USER_JOIN_SQL = _JOIN_SQL.format(
    **_COLUMNS, joiner="users u CROSS JOIN LATERAL ", user_id="u.user_id",
    where="\nWHERE u.user_id = %(user_id)s::uuid AND u.is_active",
)
# The refusal of a user gone or deactivated: the words the API's bearer authentication uses for the same case.
INACTIVE_USER = "Unknown or inactive user."
_MEETING_AT = 3
_PARTICIPANT_AT = _MEETING_AT + len(_MEETING_FIELDS)
_ACTIVE_AT = _PARTICIPANT_AT + len(_PARTICIPANT_FIELDS)
_RULE_AT = _ACTIVE_AT + ACTIVE_ASSIGNMENT_COLUMNS
# The function's refusals, as the domain errors the doors answer.
_REFUSALS: dict[str, tuple[type[DomainError], str]] = {
    "not_found": (NotFound, "No such meeting."),
    "ended": (Gone, "The meeting has ended."),
    "sign_in_required": (PermissionDenied, "This meeting requires signing in; guests cannot join."),
    "no_guests": (PermissionDenied, "This meeting does not admit guests."),
    "banned": (PermissionDenied, "The host removed you from this meeting."),
    "locked": (PermissionDenied, "The meeting is locked; the host admits no new participants."),
    "full": (Conflict, "The meeting is full."),
    "no_guest_seat": (Conflict, "No guest seat is left in this meeting."),
}
_ASSIGN = "assign"
_NO_CAPACITY = "no_capacity"
# Raised by the function when every MC it tried to claim filled up after it read them (its message: the rule of
# its first choice): the statement's writes roll back with it.
_NO_CAPACITY_SQLSTATE = "DTNC0"


@dataclass(frozen=True)
class _Admitted:
    """A join's database work done: the meeting as the join left it, the participant, its MC."""

    meeting: Meeting
    participant: MeetingParticipant
    assignment: Assignment
    created: bool


@dataclass(frozen=True)
class _Placing:
    """A join that passed every check but finds no usable MC, and the MC must be asked: the meeting row (locked
    until the transaction ends), the joiner's role, the user's open participant (None when the join creates one)
    and the active assignment that no longer stands, for meeting_assign_in_transaction."""

    meeting: Meeting
    role: str
    participant: MeetingParticipant | None
    active: ActiveRead


@dataclass(frozen=True)
class _Joiner:
    """Who joins what: the arguments of the meeting_join statement."""

    lookup: tuple[str, uuid.UUID | str]
    region: str
    user_id: uuid.UUID | None
    display_name: str | None
    ip_address: str | None
    user_agent: str | None
    client_version: str | None


def _join_statement(joiner: _Joiner) -> _Admitted | _Placing:
    """Run the meeting_join statement: the join admitted (on the active assignment or a new one), or what asking
    an MC needs; a refusal raises its domain error (nothing was written)."""
    column, value = joiner.lookup
    try:
        with prepared_cursor() as cursor:
            # The ids as text (cast in the statement): psycopg types a uuid and a NULL apart, and each combination of
            # types would be a statement of its own to prepare.
            cursor.execute(_GUEST_JOIN_SQL if joiner.user_id is None else _USER_JOIN_SQL, {
                "meeting_id": str(value) if column == "meeting_id" else None,
                "meeting_code": value if column == "meeting_code" else None,
                "region": joiner.region, "user_id": str(joiner.user_id) if joiner.user_id is not None else None,
                "principal": participant_principal(user_id=joiner.user_id, ip_address=joiner.ip_address),
                "display_name": joiner.display_name, "ip_address": joiner.ip_address,
                "user_agent": joiner.user_agent, "client_version": joiner.client_version,
                "stale": stale_threshold().total_seconds(),
                # Asking the MC (MC_ASSIGN_CALLS) must not happen inside a transaction: the function leaves it out.
                "place": not settings.MC_ASSIGN_CALLS, "gc_id": gc_id(), "candidates": settings.PLACEMENT_CANDIDATES,
                "per_minute": settings.PLACEMENT_MAX_ASSIGNMENTS_PER_MINUTE,
                "window": ASSIGNMENT_WINDOW.total_seconds(), "large": settings.PLACEMENT_LARGE_MEETING_THRESHOLD,
                "fresh_reads": FRESH_READS,
            })
            row = cursor.fetchone()
    except DatabaseError as error:
        cause = error.__cause__
        if not isinstance(cause, psycopg.Error) or cause.sqlstate != _NO_CAPACITY_SQLSTATE:
            raise
        raise no_capacity(joiner.region, cause.diag.message_primary or PlacementRule.LEAST_LOADED) from None
    if row is None:
        raise Unauthenticated(INACTIVE_USER)
    outcome, role, created = row[:_MEETING_AT]
    refusal = _REFUSALS.get(outcome)
    if refusal is not None:
        error_class, message = refusal
        raise error_class(message)
    if outcome == _NO_CAPACITY:
        raise no_capacity(joiner.region, PlacementRule.LEAST_LOADED)
    meeting = Meeting.from_db(connection.alias, _MEETING_ATTNAMES, row[_MEETING_AT:_PARTICIPANT_AT])
    participant = None
    if row[_PARTICIPANT_AT] is not None:
        participant = MeetingParticipant.from_db(
            connection.alias, _PARTICIPANT_ATTNAMES, row[_PARTICIPANT_AT:_ACTIVE_AT]
        )
    active = ActiveRead(tuple(row[_ACTIVE_AT:_RULE_AT]) if row[_ACTIVE_AT] is not None else None)
    if outcome == _ASSIGN:
        return _Placing(meeting=meeting, role=role, participant=participant, active=active)
    assert participant is not None  # joined or rejoined
    rule, assigned = row[_RULE_AT:]
    assignment = assignment_joined(active, meeting_id=meeting.pk, region=joiner.region, rule=rule, assigned=assigned)
    return _Admitted(meeting=meeting, participant=participant, assignment=assignment, created=created)


# The participant a join whose MC was asked admits, as MeetingParticipant.objects.create writes it (no signal listens
# to it): raw SQL, where compiling the ORM's INSERT cost more CPU than the database spent on it.
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
    user: User | None = None,
    user_id: uuid.UUID | None = None,
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
    nothing for the check.

    A signed-in user joins as `user`, or as `user_id` alone when the caller has not read the user; a guest names
    neither. Either way the join's statement finds the user and admits only an active one: a user gone or
    deactivated is refused (Unauthenticated) with nothing written."""
    try:
        return _join_rounds(
            meeting_ref=meeting_ref, region=region, user_id=user.pk if user is not None else user_id,
            display_name=display_name, ip_address=ip_address, user_agent=user_agent, client_version=client_version,
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
    user_id: uuid.UUID | None,
    display_name: str | None,
    ip_address: str | None,
    user_agent: str | None,
    client_version: str | None,
) -> JoinResult:
    placed: Assignment | None = None
    for _ in range(_JOIN_ROUNDS):
        try:
            result = _join_once(
                meeting_ref=meeting_ref, region=region, user_id=user_id, display_name=display_name,
                ip_address=ip_address, user_agent=user_agent, client_version=client_version,
            )
        except PlacementNeeded as needed:
            placed = meeting_place(meeting_id=needed.meeting_id, region=region,
                                   actor_user_id=user_id, max_participants=needed.max_participants)
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
    user_id: uuid.UUID | None,
    display_name: str | None,
    ip_address: str | None,
    user_agent: str | None,
    client_version: str | None,
) -> JoinResult:
    """Admit a participant (a user, or a guest when `user_id` is None), assign the meeting an MC in `region`,
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

    The database does the whole join in one statement (_join_statement): the checks, the assignment reused or
    made (meetings.services.assignment's rules), the participant, the outbox and audit rows. Outside a transaction
    that statement is the join's transaction: no BEGIN, no COMMIT. Only a join whose meeting needs an MC that must
    be asked (MC_ASSIGN_CALLS) goes on in Python: it runs the statement again in a transaction (the first wrote
    nothing and let the lock go), which holds the meeting row while meeting_assign_in_transaction decides, and
    PlacementNeeded sends it to meeting_place.
    """
    lookup = meeting_ref_lookup(meeting_ref)
    if lookup is None:
        raise NotFound("No such meeting.")
    joiner = _Joiner(lookup=lookup, region=region, user_id=user_id,
                     display_name=display_name, ip_address=ip_address, user_agent=user_agent,
                     client_version=client_version)
    joined = _join_statement(joiner) if not connection.in_atomic_block else None
    if not isinstance(joined, _Admitted):
        with transaction.atomic():
            joined = _join_statement(joiner)
            if isinstance(joined, _Placing):
                joined = _join_placing(joined, joiner=joiner)
    # Signed after the commit: the meeting row (and a claimed MC's) stay locked only for the database's own work.
    token = _meeting_token(joined.participant)
    return JoinResult(meeting=joined.meeting, participant=joined.participant, assignment=joined.assignment,
                      token=token, created=joined.created)


def _join_placing(placing: _Placing, *, joiner: _Joiner) -> _Admitted:
    """The rest of a join whose meeting needs an MC, in the transaction that holds the meeting row: assign one
    (PlacementNeeded leaves before anything is written: the rollback only gives back the lock), then the
    participant, the meeting's start and the audit rows, as the meeting_join statement writes them."""
    meeting, participant = placing.meeting, placing.participant
    created = participant is None
    audit_entries: list[AuditEntry] = []
    assignment = meeting_assign_in_transaction(
        meeting_id=meeting.pk, region=joiner.region, actor_user_id=joiner.user_id,
        max_participants=meeting.max_participants, audit_entries=audit_entries, meeting=meeting,
        active=placing.active,
    )
    if participant is None:
        participant = _participant_insert(MeetingParticipant(
            meeting=meeting, participant_id=uuid.uuid4(), user_id=joiner.user_id,
            display_name=joiner.display_name or _user_display_name(joiner.user_id), role=placing.role,
            status=ParticipantStatus.WAITING if _must_wait(meeting, placing.role) else ParticipantStatus.ADMITTED,
            ip_address=joiner.ip_address, user_agent=joiner.user_agent, client_version=joiner.client_version,
        ))
    if meeting.status == MeetingStatus.SCHEDULED:
        # A new assignment started the meeting already (and updated this copy); a reused one did not.
        _meeting_start(meeting)
    audit_entries.append(AuditEntry(
        event_type="participant_joined" if created else "participant_rejoined", action="join",
        actor_type=ActorType.USER if joiner.user_id is not None else ActorType.API, actor_user_id=joiner.user_id,
        target_type="meeting", target_id=str(meeting.pk), ip_address=joiner.ip_address,
        user_agent=joiner.user_agent,
        metadata={
            "participant_id": str(participant.participant_id), "role": participant.role,
            "status": participant.status, "controller_id": assignment.controller_id, "region": joiner.region,
        },
    ))
    audit_record_many(audit_entries)
    return _Admitted(meeting=meeting, participant=participant, assignment=assignment, created=created)


def _user_display_name(user_id: uuid.UUID | None) -> str:
    """A participant's default name: its user's (read in the join's transaction, which found the user active),
    "Guest" for a guest."""
    if user_id is None:
        return "Guest"
    return User.objects.filter(pk=user_id).values_list("display_name", flat=True).get()


_ACTIVATE_SQL = f"""
UPDATE meetings SET status = '{MeetingStatus.ACTIVE}', actual_start_time = statement_timestamp()
WHERE meeting_id = %s AND status = '{MeetingStatus.SCHEDULED}'
RETURNING {", ".join(MEETING_CHANGED)}
"""  # noqa: S608 -- constants only


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
