"""A join whose meeting already runs on an MC in the region (the reused assignment) does its database work in one
statement: the meeting_join function locks the meeting row, checks, counts, inserts the participant and the
audit row. These tests hold that count, each refusal through that statement, and the rows it writes."""

from __future__ import annotations

import uuid
from collections import Counter
from contextlib import contextmanager
from datetime import timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from accounts.tokens import token_issue
from audit.models import AuditLog, OutboxEvent
from controllers.models import MeetingController
from darktower.errors import Conflict, Gone, InvalidInput, NoCapacity, NotFound, PermissionDenied
from darktower.process import gc_id
from meetings.models import MeetingAssignment, MeetingParticipant, MeetingStatus, ParticipantStatus
from meetings.services.assignment import meeting_assign
from meetings.services.participants import meeting_join, participants_close
from tests.factories import make_controller, make_meeting, make_user
from tests.locks import wait_until_blocking
from tests.meetings.test_assignment_concurrency import THREADS, run_concurrently
from tests.meetings.test_assignment_lock_order import Actor

REGION = "us-east-1"
# A transaction's own framing: BEGIN / COMMIT are not statements Django's cursor runs; inside the test's
# transaction they are a savepoint and its release.
_FRAMING = ("SAVEPOINT", "RELEASE SAVEPOINT", "ROLLBACK TO SAVEPOINT")


@contextmanager
def statements():
    """The statements run on this thread's connection inside the block, framing left out."""
    seen: list[str] = []

    def record(execute, sql, params, many, context):
        if not sql.lstrip().upper().startswith(_FRAMING):
            seen.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(record):
        yield seen


@pytest.fixture
def controller(db):
    # The first token signed creates the signing key: not a statement of any join counted here.
    token_issue(subject="warm-up", audience=None, scopes=[], lifetime_seconds=60)
    return make_controller(region=REGION, controller_id="mc-us-east-1-a")


def placed_meeting(**extra):
    """A meeting that already runs on the region's MC (its active assignment is reused by the next join)."""
    meeting = make_meeting(host=extra.pop("host", None) or make_user(), **extra)
    meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=meeting.created_by_user)
    return meeting


def rows(meeting):
    return (MeetingParticipant.objects.filter(meeting=meeting).count(),
            AuditLog.objects.filter(target_id=str(meeting.pk)).count(), OutboxEvent.objects.count())


@pytest.mark.django_db
def test_a_reused_join_is_one_statement(controller):
    meeting = placed_meeting()
    user = make_user(display_name="Ada")
    with statements() as seen:
        result = meeting_join(meeting_ref=meeting.meeting_code, region=REGION, user=user, ip_address="192.0.2.1",
                              user_agent="pytest", client_version="1.2.3")
    assert len(seen) == 1, seen
    assert result.created and result.assignment.reused and result.assignment.rule == "reused"
    assert result.assignment.controller_id == controller.controller_id
    assert result.assignment.grpc_endpoint == controller.grpc_endpoint
    assert result.assignment.webtransport_endpoint == controller.webtransport_endpoint
    stored = MeetingParticipant.objects.get(pk=result.participant.pk)
    assert (stored.participant_id, stored.user_id, stored.display_name, stored.role, stored.status) == (
        result.participant.participant_id, user.pk, "Ada", "participant", ParticipantStatus.ADMITTED)
    assert (stored.ip_address, stored.user_agent, stored.client_version) == ("192.0.2.1", "pytest", "1.2.3")
    assert (stored.left_at, stored.leave_reason, stored.total_duration_seconds) == (None, None, 0)
    assert stored.joined_at == result.participant.joined_at
    audit = AuditLog.objects.filter(target_id=str(meeting.pk)).latest("id")
    assert (audit.event_type, audit.action, audit.actor_type, audit.actor_user_id, audit.result) == (
        "participant_joined", "join", "user", user.pk, "success")
    assert (audit.target_type, audit.ip_address, audit.user_agent) == ("meeting", "192.0.2.1", "pytest")
    assert audit.metadata == {"participant_id": str(stored.participant_id), "role": "participant",
                              "status": "admitted", "controller_id": controller.controller_id, "region": REGION}
    assert result.meeting.pk == meeting.pk and result.meeting.status == MeetingStatus.ACTIVE
    assert result.meeting.assigned_controller_id == controller.controller_id


@pytest.mark.django_db
def test_a_reload_is_one_statement_and_gives_back_the_open_participant(controller):
    meeting = placed_meeting()
    user = make_user()
    first = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user)
    with statements() as seen:
        again = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user, display_name="Other name")
    assert len(seen) == 1, seen
    assert not again.created
    assert again.participant.pk == first.participant.pk
    assert again.participant.display_name == first.participant.display_name
    assert MeetingParticipant.objects.filter(meeting=meeting, user=user).count() == 1
    audit = AuditLog.objects.filter(target_id=str(meeting.pk)).latest("id")
    assert (audit.event_type, audit.metadata["participant_id"]) == (
        "participant_rejoined", str(first.participant.participant_id))


@pytest.mark.django_db
def test_a_reused_guest_join_is_one_statement_and_waits_in_the_waiting_room(controller):
    meeting = placed_meeting(allow_guests=True, waiting_room_enabled=True)
    with statements() as seen:
        result = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=None, display_name="Guest Ann",
                              ip_address="192.0.2.9")
    assert len(seen) == 1, seen
    stored = MeetingParticipant.objects.get(pk=result.participant.pk)
    assert (stored.user_id, stored.display_name, stored.role, stored.status) == (
        None, "Guest Ann", "guest", ParticipantStatus.WAITING)
    audit = AuditLog.objects.filter(target_id=str(meeting.pk)).latest("id")
    assert (audit.actor_type, audit.actor_user_id, audit.metadata["status"]) == ("api", None, "waiting")


@pytest.mark.django_db
def test_a_user_without_a_display_name_given_joins_under_their_own_and_an_empty_one_counts_as_none(controller):
    meeting = placed_meeting()
    user = make_user(display_name="Grace")
    result = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user, display_name="")
    assert MeetingParticipant.objects.get(pk=result.participant.pk).display_name == "Grace"


@pytest.mark.django_db
def test_a_reused_join_starts_a_scheduled_meeting(controller):
    meeting = make_meeting(host=make_user())
    meeting_assign(meeting_id=meeting.pk, region=REGION)  # placed, not started: no join yet
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.SCHEDULED
    user = make_user()
    with statements() as seen:
        result = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user)
    assert len(seen) == 1, [sql[:60] for sql in seen]
    meeting.refresh_from_db()
    assert meeting.status == MeetingStatus.ACTIVE and meeting.actual_start_time is not None
    assert (result.meeting.status, result.meeting.actual_start_time) == (meeting.status, meeting.actual_start_time)
    assert result.meeting.updated_at == meeting.updated_at


def _ended(meeting):
    meeting.status, meeting.ended_at = MeetingStatus.ENDED, timezone.now()
    meeting.save(update_fields=["status", "ended_at"])


def _banned(meeting):
    meeting.bans.create(principal="guest:192.0.2.66", participant_id=uuid.uuid4(), display_name="Heckler")


def _locked(meeting):
    meeting.locked = True
    meeting.save(update_fields=["locked"])


def _one_seat_taken_by(meeting, role):
    MeetingParticipant.objects.create(meeting=meeting, participant_id=uuid.uuid4(), display_name="X", role=role)


# (meeting options, what happens to the placed meeting, the joiner (None: a guest), error, message)
REFUSALS = {
    "ended": ({"allow_guests": True}, _ended, None, Gone, "The meeting has ended."),
    "guests need sign-in": ({"allow_guests": True, "require_auth": True}, None, None, PermissionDenied,
                            "This meeting requires signing in; guests cannot join."),
    "no guests": ({"allow_guests": False}, None, None, PermissionDenied, "This meeting does not admit guests."),
    "banned": ({"allow_guests": True}, _banned, None, PermissionDenied, "The host removed you from this meeting."),
    "locked": ({"allow_guests": True}, _locked, None, PermissionDenied,
               "The meeting is locked; the host admits no new participants."),
    # The host's own participant holds the only seat.
    "full": ({"max_participants": 1}, None, "user", Conflict, "The meeting is full."),
    "no guest seat": ({"allow_guests": True, "max_guests": 1}, lambda m: _one_seat_taken_by(m, "guest"), None,
                      Conflict, "No guest seat is left in this meeting."),
    "full for the host too": ({"max_participants": 2}, lambda m: (participants_close(
        meeting_id=m.pk, leave_reason="voluntary"), _one_seat_taken_by(m, "participant"),
        _one_seat_taken_by(m, "participant")), "host", Conflict, "The meeting is full."),
}


@pytest.mark.django_db
@pytest.mark.parametrize("case", list(REFUSALS))
def test_each_refusal_comes_from_the_one_statement_and_writes_nothing(controller, case):
    options, change, joiner, error, message = REFUSALS[case]
    meeting = placed_meeting(**options)
    if change is not None:
        change(meeting)
    user = {"user": make_user(), "host": meeting.created_by_user, None: None}[joiner]
    before = rows(meeting)
    with statements() as seen, pytest.raises(error) as raised:
        meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user, display_name="G",
                     ip_address="192.0.2.66")
    assert str(raised.value.message) == message
    assert len(seen) == 1, seen
    assert rows(meeting) == before


@pytest.mark.django_db
def test_an_unknown_meeting_is_not_found_in_one_statement(controller):
    user = make_user()
    with statements() as seen, pytest.raises(NotFound, match=r"No such meeting\."):
        meeting_join(meeting_ref=str(uuid.uuid4()), region=REGION, user=user)
    assert len(seen) == 1, seen
    with pytest.raises(NotFound, match=r"No such meeting\."):
        meeting_join(meeting_ref="no-such-code", region=REGION, user=user)


@pytest.mark.django_db
def test_the_waiting_room_takes_no_seat_and_the_host_joins_a_full_meeting_again(controller):
    host = make_user()
    meeting = placed_meeting(host=host, max_participants=1, allow_guests=True, waiting_room_enabled=True)
    # Full (the host holds the seat), yet a guest waits: waiting takes no seat.
    waiting = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=None, display_name="G")
    assert waiting.participant.status == ParticipantStatus.WAITING
    # The host's reload in a full meeting gets their participant back.
    again = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=host)
    assert not again.created and again.participant.role == "host"


@pytest.mark.django_db
def test_a_stale_mc_is_not_reused_by_the_statement(controller):
    meeting = placed_meeting()
    other = make_controller(region=REGION, controller_id="mc-us-east-1-b")
    type(controller).objects.filter(pk=controller.pk).update(last_heartbeat_at=timezone.now() - timedelta(hours=1))
    result = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=make_user())
    assert not result.assignment.reused and result.assignment.controller_id == other.controller_id


@pytest.mark.django_db(transaction=True)
def test_concurrent_reused_joins_never_take_more_than_the_last_seat():
    make_controller(region=REGION, controller_id="mc-us-east-1-a")
    meeting = placed_meeting(max_participants=3)
    users = [make_user() for _ in range(THREADS)]

    def join(index):
        try:
            return meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=users[index]).created
        except Conflict as refused:
            return refused.message

    results, errors = run_concurrently(join)
    assert not errors, errors
    # The host holds one seat of three.
    assert Counter(results.values()) == {True: 2, "The meeting is full.": THREADS - 2}
    assert MeetingParticipant.objects.filter(meeting=meeting, left_at__isnull=True).count() == 3
    assert AuditLog.objects.filter(target_id=str(meeting.pk), event_type="participant_joined").count() == 3


@pytest.mark.django_db(transaction=True)
def test_concurrent_reloads_of_one_user_give_back_one_participant():
    make_controller(region=REGION, controller_id="mc-us-east-1-a")
    meeting = placed_meeting(max_participants=50)
    user = make_user()
    meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user)
    results, errors = run_concurrently(
        lambda index: meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user).participant.pk)
    assert not errors, errors
    assert len(set(results.values())) == 1
    assert MeetingParticipant.objects.filter(meeting=meeting, user=user).count() == 1


# --- First joins: the function places the meeting (MC_ASSIGN_CALLS off) ----------------------------------------


@pytest.mark.django_db
def test_a_first_join_is_one_statement_and_writes_what_the_python_placement_wrote(controller):
    meeting = make_meeting(host=make_user())
    user = make_user()
    with statements() as seen:
        result = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user, ip_address="192.0.2.1")
    assert len(seen) == 1, [sql[:60] for sql in seen]
    assert result.created and not result.assignment.reused and result.assignment.rule == "least_loaded"
    assert (result.assignment.controller_id, result.assignment.grpc_endpoint) == (
        controller.controller_id, controller.grpc_endpoint)
    assignment = MeetingAssignment.objects.get(meeting=meeting)
    assert result.assignment.assignment_id == assignment.pk
    assert (assignment.meeting_controller_id, assignment.region, assignment.assigned_by_gc_id) == (
        controller.controller_id, REGION, gc_id())
    assert (assignment.reserved_participants, assignment.pending_until, assignment.media_handler_ids) == (0, None, None)
    controller.refresh_from_db()
    assert controller.assigned_since_heartbeat == 1 and controller.assignments_in_window == 1
    meeting.refresh_from_db()
    assert (meeting.status, meeting.assigned_controller_id, meeting.assigned_region) == (
        MeetingStatus.ACTIVE, controller.controller_id, REGION)
    assert (result.meeting.status, result.meeting.actual_start_time) == (meeting.status, meeting.actual_start_time)
    payload = {"meeting_id": str(meeting.pk), "region": REGION, "controller_id": controller.controller_id,
               "previous_controller_id": None, "assignment_id": assignment.pk, "assigned_by_gc_id": gc_id(),
               "rule": "least_loaded", "reserved_participants": 0}
    [event] = OutboxEvent.objects.filter(aggregate_id=str(meeting.pk))
    assert (event.aggregate_type, event.event_type, event.payload) == ("meeting", "meeting_assigned", payload)
    assert (event.processed_at, event.attempts, event.failed_at) == (None, 0, None)
    assigned, joined = AuditLog.objects.filter(target_id=str(meeting.pk)).order_by("id")
    assert (assigned.event_type, assigned.action, assigned.actor_type, assigned.actor_user_id) == (
        "meeting_assigned", "assign", "user", user.pk)
    assert (assigned.ip_address, assigned.user_agent, assigned.result) == (None, None, "success")
    assert assigned.metadata == {key: value for key, value in payload.items() if key != "meeting_id"}
    assert (joined.event_type, joined.metadata["controller_id"]) == ("participant_joined", controller.controller_id)


@pytest.mark.django_db
def test_a_guests_first_join_is_assigned_by_the_system_and_a_large_meeting_reserves_its_seats(controller, settings):
    settings.PLACEMENT_LARGE_MEETING_THRESHOLD = 10
    meeting = make_meeting(host=make_user(), allow_guests=True, max_participants=50)
    meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=None, display_name="G")
    assigned = AuditLog.objects.get(target_id=str(meeting.pk), event_type="meeting_assigned")
    assert (assigned.actor_type, assigned.actor_user_id, assigned.metadata["reserved_participants"]) == (
        "system", None, 50)
    assert MeetingAssignment.objects.get(meeting=meeting).reserved_participants == 50
    controller.refresh_from_db()
    assert controller.reserved_participants == 50


@pytest.mark.django_db
def test_a_join_moves_a_meeting_off_a_stale_mc_and_gives_its_slot_back(controller):
    stale = make_controller(region=REGION, controller_id="mc-us-east-1-z", assigned_since_heartbeat=1,
                            last_heartbeat_at=timezone.now() - timedelta(hours=1))
    meeting = make_meeting(host=make_user())
    old = MeetingAssignment.objects.create(meeting=meeting, meeting_controller_id=stale.pk, region=REGION,
                                           assigned_by_gc_id="gc-test")
    result = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=make_user())
    assert result.assignment.controller_id == controller.controller_id and not result.assignment.reused
    old.refresh_from_db()
    assert old.ended_at is not None and old.end_reason == "reassigned"
    stale.refresh_from_db()
    assert stale.assigned_since_heartbeat == 0
    event = OutboxEvent.objects.get(aggregate_id=str(meeting.pk), event_type="meeting_assigned")
    assert event.payload["previous_controller_id"] == stale.controller_id


@pytest.mark.django_db
def test_a_degraded_mc_keeps_its_meeting_when_no_healthy_one_exists_and_takes_new_ones(db):
    degraded = make_controller(region=REGION, controller_id="mc-us-east-1-d", health="degraded")
    meeting = make_meeting(host=make_user())
    first = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=make_user())
    assert (first.assignment.controller_id, first.assignment.rule, first.assignment.reused) == (
        degraded.controller_id, "degraded_fallback", False)
    again = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=make_user())
    assert (again.assignment.assignment_id, again.assignment.rule, again.assignment.reused) == (
        first.assignment.assignment_id, "degraded_fallback", True)
    # A healthy MC appears: the meeting moves to it.
    healthy = make_controller(region=REGION, controller_id="mc-us-east-1-h")
    moved = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=make_user())
    assert (moved.assignment.controller_id, moved.assignment.rule) == (healthy.controller_id, "least_loaded")
    assert MeetingAssignment.objects.filter(meeting=meeting, ended_at__isnull=True).count() == 1


@pytest.mark.django_db
def test_no_mc_with_room_is_no_capacity_and_an_unknown_region_is_invalid_input_with_nothing_written(controller):
    type(controller).objects.filter(pk=controller.pk).update(current_meetings=controller.max_meetings)
    meeting = make_meeting(host=make_user())
    user = make_user()
    before = rows(meeting)
    with pytest.raises(NoCapacity):
        meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user)
    with pytest.raises(InvalidInput) as raised:
        meeting_join(meeting_ref=str(meeting.pk), region="nowhere-1", user=user)
    assert "region" in raised.value.fields
    assert rows(meeting) == before
    assert not MeetingAssignment.objects.filter(meeting=meeting).exists()


def _join_in_a_transaction(meeting, user):
    """The join inside a caller's transaction (as with an Idempotency-Key), which stays usable after a refusal."""
    with transaction.atomic():
        try:
            meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user)
        finally:
            MeetingAssignment.objects.filter(meeting=meeting).count()  # raises if the transaction were broken


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("caller_transaction", [False, True])
def test_a_join_whose_every_claim_fills_up_meanwhile_writes_nothing_and_answers_no_capacity(caller_transaction):
    # The only candidate has one slot; a concurrent claim holds its row and takes that slot. The join, queued
    # behind it, locks the old MC and the candidate, ends the stale assignment, inserts its own and claims: the
    # claim finds the MC full, a fresh read finds nothing, and the statement rolls back as a whole.
    target = make_controller(region=REGION, controller_id="mc-us-east-1-a", max_meetings=1)
    stale = make_controller(region=REGION, controller_id="mc-us-east-1-z", assigned_since_heartbeat=1,
                            last_heartbeat_at=timezone.now() - timedelta(hours=1))
    meeting = make_meeting(host=make_user())
    old = MeetingAssignment.objects.create(meeting=meeting, meeting_controller_id=stale.pk, region=REGION,
                                           assigned_by_gc_id="gc-test")
    user = make_user()
    before = rows(meeting)
    if caller_transaction:
        join = Actor(lambda: _join_in_a_transaction(meeting, user))
    else:
        join = Actor(lambda: meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user))
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE meeting_controllers SET assigned_since_heartbeat = 1 WHERE controller_id = %s",
                       [target.pk])
        join.start()
        assert wait_until_blocking(), "the join never waited for the MC row"
    join.join(timeout=60)
    assert isinstance(join.error, NoCapacity), join.error
    old.refresh_from_db()
    assert old.ended_at is None
    stale.refresh_from_db()
    assert stale.assigned_since_heartbeat == 1
    assert MeetingAssignment.objects.filter(meeting=meeting).count() == 1
    assert rows(meeting) == before


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_joins_of_one_meeting_make_one_assignment_and_never_oversell_an_mc():
    make_controller(region=REGION, controller_id="mc-us-east-1-a", max_meetings=3)
    make_controller(region=REGION, controller_id="mc-us-east-1-b", max_meetings=3)
    host = make_user()
    meetings = [make_meeting(host=host) for _ in range(8)]
    users = [make_user() for _ in range(THREADS)]

    def join(index):
        try:
            return meeting_join(meeting_ref=str(meetings[index % 8].pk), region=REGION,
                                user=users[index]).assignment.controller_id
        except NoCapacity:
            return "no capacity"

    results, errors = run_concurrently(join)
    assert not errors, errors
    active = MeetingAssignment.objects.filter(ended_at__isnull=True)
    # Six slots for eight meetings: six placed, two refused, every join of a placed meeting on its one MC.
    assert active.count() == 6
    assert Counter(active.values_list("meeting_controller_id", flat=True)) == {"mc-us-east-1-a": 3,
                                                                              "mc-us-east-1-b": 3}
    by_meeting = dict(active.values_list("meeting_id", "meeting_controller_id"))
    for index, answer in results.items():
        assert answer == by_meeting.get(meetings[index % 8].pk, "no capacity")
    for controller in MeetingController.objects.all():
        assert controller.current_meetings + controller.assigned_since_heartbeat <= controller.max_meetings


@pytest.mark.django_db
def test_the_statements_draw_weights_each_mc_by_its_free_share():
    # Weights 1 - load: 1.0 for the idle MC, 0.1 for the one at 90 % (its load barely moves over these joins). The
    # loaded MC's share is 1/11: about 18 of 200, never none (always the least loaded) nor half (a uniform draw).
    make_controller(region=REGION, controller_id="mc-idle", max_meetings=100_000)
    make_controller(region=REGION, controller_id="mc-busy", max_meetings=100_000, current_meetings=90_000)
    host = make_user()
    chosen = Counter(
        meeting_join(meeting_ref=str(make_meeting(host=host).pk), region=REGION, user=host).assignment.controller_id
        for _ in range(200)
    )
    assert set(chosen) <= {"mc-idle", "mc-busy"}
    assert 3 <= chosen["mc-busy"] <= 45, chosen
