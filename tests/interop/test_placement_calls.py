"""Placement that asks the MC first (MC_ASSIGN_CALLS): joins through the REST API, MCs that behave as Dark
Tower's own (tests/interop/original.py), media handlers in the database."""

from __future__ import annotations

import random
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts.services.service_tokens import gc_service_token_forget
from audit.models import AuditLog, OutboxEvent
from controllers.models import MeetingController
from controllers.services.drain import drain_begin
from meetings.models import MeetingAssignment
from meetings.services.assignment import meeting_place
from meetings.services.drain_deadlines import drains_enforce
from tests.factories import make_controller, make_handler, make_meeting, make_user
from tests.interop.original import McState, OriginalMc

REGION = "us-east-1"
pytestmark = [pytest.mark.mc_calls, pytest.mark.django_db(transaction=True)]


@pytest.fixture(autouse=True)
def fresh_gc_token():
    gc_service_token_forget()
    yield
    gc_service_token_forget()


@pytest.fixture(autouse=True)
def roomy_join_limits(settings):
    settings.RATE_LIMIT_JOIN_PER_IP = 100_000
    settings.RATE_LIMIT_JOIN_PER_PRINCIPAL = 100_000
    settings.MC_ASSIGN_TIMEOUT_SECONDS = 5.0  # a first call fetches the JWKS; a loaded machine is slow


@pytest.fixture
def start_mcs(live_server):
    """start_mcs(n, **state) -> n original MCs serving on loopback and registered (healthy, beating) here."""
    started: list[OriginalMc] = []

    def start(count: int, **state_fields):
        mcs = []
        for index in range(count):
            mc = OriginalMc(f"{live_server.url}/.well-known/jwks.json", state=McState(**state_fields)).start()
            started.append(mc)
            # Names sort in creation order; equal loads make the draw pick any of them.
            make_controller(controller_id=f"mc-{index}-{uuid.uuid4().hex[:6]}", region=REGION,
                            grpc_endpoint=mc.endpoint)
            mc.controller_id = MeetingController.objects.get(grpc_endpoint=mc.endpoint).pk
            mcs.append(mc)
        return mcs

    yield start
    for mc in started:
        mc.stop()


@pytest.fixture
def handlers(db):
    return [make_handler(region=REGION, current_streams=10), make_handler(region=REGION, current_streams=20)]


def guest_join(meeting, name="Guest"):
    return Client().post(f"/api/v1/meetings/{meeting.meeting_code}/guest-token",
                         {"display_name": name, "region": REGION}, content_type="application/json")


def guest_meeting():
    return make_meeting(host=make_user(), allow_guests=True, max_participants=100, max_guests=100)


def told(mcs):
    return [(mc, call) for mc in mcs for call in mc.calls]


def test_a_first_join_tells_the_mc_with_its_media_handlers_and_a_second_does_not(start_mcs, handlers):
    (mc,) = start_mcs(1)
    meeting = guest_meeting()
    response = guest_join(meeting)
    assert response.status_code == 201, response.content
    body = response.json()
    (call,) = mc.calls
    assert call.meeting_id == str(meeting.pk)
    assert 1 <= len(call.mh_assignments) <= 2
    assert {mh_id for mh_id, _, _ in call.mh_assignments} <= {h.handler_id for h in handlers}
    assert [h["handler_id"] for h in body["media_handlers"]] == [mh_id for mh_id, _, _ in call.mh_assignments]
    assert body["controller_id"] == mc.controller_id
    assignment = MeetingAssignment.objects.get(meeting=meeting, ended_at__isnull=True)
    assert assignment.pending_until is None
    assert assignment.media_handler_ids == [mh_id for mh_id, _, _ in call.mh_assignments]
    event = OutboxEvent.objects.get(aggregate_id=str(meeting.pk), event_type="meeting_assigned")
    assert event.payload["attempts"] == 1 and event.payload["refused"] == []

    again = guest_join(meeting, "Second guest")
    assert again.status_code == 201
    assert again.json()["controller_id"] == mc.controller_id
    assert again.json()["media_handlers"] == body["media_handlers"]
    assert len(mc.calls) == 1


class FirstChoice(random.Random):
    """A draw that always takes the first candidate: the least loaded (ties: newest heartbeat, then id)."""

    def choices(self, population, weights=None, *, cum_weights=None, k=1):
        return [population[0]] * k


def loaded(mc, meetings):
    MeetingController.objects.filter(pk=mc.controller_id).update(current_meetings=meetings)


@pytest.mark.parametrize(("state", "reason"), [
    ({"draining": True}, "draining"),
    ({"max_meetings": 0}, "at_capacity"),
    ({"max_participants": 5}, "at_capacity"),
])
def test_a_refusing_mc_is_skipped_held_full_and_the_next_one_told(start_mcs, handlers, state, reason):
    (refusing,) = start_mcs(1, **state)
    (accepting,) = start_mcs(1)
    loaded(accepting, 10)  # the refusing MC is the first choice
    meeting = guest_meeting()
    assignment = meeting_place(meeting_id=meeting.pk, region=REGION, rng=FirstChoice())
    assert assignment.controller_id == accepting.controller_id and not assignment.reused
    assert [h.handler_id for h in assignment.media_handlers] == [h.handler_id for h in handlers]
    assert len(refusing.calls) == 1 and len(accepting.calls) == 1
    refused = MeetingController.objects.get(pk=refusing.controller_id)
    assert refused.current_meetings + refused.assigned_since_heartbeat >= refused.max_meetings
    ended = MeetingAssignment.objects.get(meeting=meeting, meeting_controller_id=refusing.controller_id)
    assert ended.end_reason == "mc_refused" and ended.ended_at is not None
    failure = AuditLog.objects.get(event_type="meeting_assignment_refused", target_id=str(meeting.pk))
    assert failure.metadata["reason"] == reason and failure.result == "failure"
    event = OutboxEvent.objects.get(aggregate_id=str(meeting.pk), event_type="meeting_assigned")
    assert event.payload["attempts"] == 2
    assert event.payload["refused"] == [
        {"controller_id": refusing.controller_id, "outcome": "rejected", "reason": reason}
    ]
    assert event.payload["media_handler_ids"] == [h.handler_id for h in handlers]


def test_a_slow_mc_is_skipped_after_the_deadline(start_mcs, handlers, settings):
    settings.MC_ASSIGN_TIMEOUT_SECONDS = 0.3
    slow, fast = start_mcs(2)
    loaded(fast, 10)
    release = threading.Event()
    slow.before_answer = lambda call: release.wait(10)
    try:
        assignment = meeting_place(meeting_id=guest_meeting().pk, region=REGION, rng=FirstChoice())
    finally:
        release.set()
    assert assignment.controller_id == fast.controller_id
    failure = AuditLog.objects.get(event_type="meeting_assignment_refused")
    assert (failure.metadata["controller_id"], failure.metadata["reason"]) == (slow.controller_id,
                                                                              "deadline_exceeded")


def test_three_refusals_then_503_and_nothing_left_behind(start_mcs, handlers):
    mcs = start_mcs(4, draining=True)
    meeting = guest_meeting()
    response = guest_join(meeting)
    assert response.status_code == 503, response.content
    assert response["Retry-After"]
    assert len(told(mcs)) == 3
    assert not MeetingAssignment.objects.filter(meeting=meeting, ended_at__isnull=True).exists()
    assert MeetingAssignment.objects.filter(meeting=meeting, end_reason="mc_refused").count() == 3
    assert not meeting.participants.exists()
    (untold,) = [mc for mc in mcs if not mc.calls]
    assert MeetingController.objects.get(pk=untold.controller_id).assigned_since_heartbeat == 0


def test_an_unreachable_mc_is_skipped(start_mcs, handlers):
    (alive,) = start_mcs(1)
    dead = make_controller(region=REGION, grpc_endpoint="http://127.0.0.1:9")  # nothing listens there
    loaded(alive, 10)
    assignment = meeting_place(meeting_id=guest_meeting().pk, region=REGION, rng=FirstChoice())
    assert assignment.controller_id == alive.controller_id
    failure = AuditLog.objects.get(event_type="meeting_assignment_refused")
    assert (failure.metadata["controller_id"], failure.metadata["reason"]) == (dead.pk, "unavailable")


def test_no_media_handler_is_a_503_without_asking_any_mc(start_mcs):
    (mc,) = start_mcs(1)
    make_handler(region=REGION, health="unhealthy")
    make_handler(region=REGION, last_heartbeat_at=timezone.now() - timezone.timedelta(minutes=5))
    response = guest_join(guest_meeting())
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "no_media_handler_available"
    assert response["Retry-After"]
    assert mc.calls == []


def test_fifty_concurrent_first_joins_tell_one_mc_once(start_mcs, handlers, settings):
    settings.MC_ASSIGN_TIMEOUT_SECONDS = 3.0  # waiters may wait 10 s on a busy machine
    mcs = start_mcs(3)
    meeting = guest_meeting()
    gate = threading.Barrier(50)

    def join(index):
        gate.wait(30)
        try:
            return guest_join(meeting, f"Guest {index}")
        finally:
            connection.close()

    with ThreadPoolExecutor(max_workers=50) as pool:
        responses = list(pool.map(join, range(50)))
    assert [r.status_code for r in responses] == [201] * 50, [r.content for r in responses if r.status_code != 201]
    assert len(told(mcs)) == 1
    assert {r.json()["controller_id"] for r in responses} == {told(mcs)[0][0].controller_id}
    assert MeetingAssignment.objects.filter(meeting=meeting).count() == 1


def test_a_waiting_join_gives_up_after_the_placement_deadline(start_mcs, handlers, settings):
    settings.MC_ASSIGN_TIMEOUT_SECONDS = 5.0
    (mc,) = start_mcs(1)
    meeting = guest_meeting()
    inside, release = threading.Event(), threading.Event()

    def hold(call):
        inside.set()
        release.wait(10)

    mc.before_answer = hold
    with ThreadPoolExecutor(max_workers=1) as pool:
        first = pool.submit(lambda: (guest_join(meeting, "First"), connection.close())[0])
        assert inside.wait(10)
        # The first placement holds the lock while its MC does not answer; this join may wait at most
        # MC_ASSIGN_TIMEOUT_SECONDS * 3 + 1 s, the longest a placement can take, then 503.
        settings.MC_ASSIGN_TIMEOUT_SECONDS = 0.01
        waited = guest_join(meeting, "Second")
        release.set()
        first.result(30)
    assert waited.status_code == 503
    assert waited.json()["error"]["code"] == "placement_in_progress"


def test_meeting_place_refuses_to_run_inside_a_transaction(start_mcs, handlers):
    from django.db import transaction
    from django.db.transaction import TransactionManagementError

    with transaction.atomic(), pytest.raises(TransactionManagementError):
        meeting_place(meeting_id=guest_meeting().pk, region=REGION)


def _drained_to(start_mcs, handlers, *, target_state=None):
    source, target = start_mcs(1)[0], start_mcs(1, **(target_state or {}))[0]
    loaded(target, 10)  # the meeting goes to the source first
    meeting = guest_meeting()
    placed = meeting_place(meeting_id=meeting.pk, region=REGION, rng=FirstChoice())
    assert placed.controller_id == source.controller_id
    drain_begin(controller_id=source.controller_id, deadline_seconds=0, target_controller_id=target.controller_id)
    (enforced,) = drains_enforce()
    return meeting, source, target, enforced


def test_a_drain_move_tells_the_target_mc_first(start_mcs, handlers):
    meeting, source, target, enforced = _drained_to(start_mcs, handlers)
    (call,) = target.calls
    assert call.meeting_id == str(meeting.pk)
    assert call.mh_assignments == source.calls[0].mh_assignments
    assert len(enforced.moved) == 1 and enforced.ended == []
    moved = MeetingAssignment.objects.get(meeting=meeting, ended_at__isnull=True)
    assert moved.meeting_controller_id == target.controller_id
    assert moved.media_handler_ids == [mh_id for mh_id, _, _ in call.mh_assignments]
    meeting.refresh_from_db()
    assert meeting.assigned_controller_id == target.controller_id


def test_a_drain_target_that_refuses_gets_nothing_and_the_meeting_is_ended(start_mcs, handlers):
    meeting, _source, target, enforced = _drained_to(start_mcs, handlers, target_state={"draining": True})
    assert len(target.calls) == 1
    assert enforced.moved == [] and len(enforced.ended) == 1
    assert not MeetingAssignment.objects.filter(meeting=meeting, ended_at__isnull=True).exists()
    # The next join places it again, asking an MC: here the target, once it stopped draining.
    target.state.draining = False
    response = guest_join(meeting)
    assert response.status_code == 201, response.content
    assert response.json()["controller_id"] == target.controller_id
    assert len(target.calls) == 2
