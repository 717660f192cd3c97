"""Concurrent joins, each thread on its own database connection with real commits: every request for the
same meeting and region gets the same MC, and one active assignment row exists (uq_meeting_assignments_active).

Two levels: meeting_assign called directly (no meeting-row lock, so only the partial unique index and
INSERT ... ON CONFLICT keep the race safe) and the REST join (which also locks the meeting row for the
capacity check)."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import OperationalError, connection, transaction
from django.utils import timezone
from rest_framework.test import APIClient

from audit.models import OutboxEvent
from controllers.models import MeetingController
from meetings.models import Meeting, MeetingAssignment, MeetingParticipant
from meetings.services.assignment import meeting_assign
from tests.factories import make_controller, make_meeting, make_user, user_token
from tests.locks import wait_until_blocking

pytestmark = pytest.mark.django_db(transaction=True)

REGION = "us-east-1"
THREADS = 12


def load(controller: MeetingController) -> int:
    """The effective load placement judges: reported meetings plus those assigned since (in-flight)."""
    return controller.current_meetings + controller.assigned_since_heartbeat


def run_concurrently(work, count=THREADS):
    """Run work(index) in `count` threads released together; returns results and exceptions by index."""
    barrier = threading.Barrier(count)
    results, errors = {}, {}

    def target(index):
        try:
            barrier.wait(timeout=30)
            results[index] = work(index)
        except Exception as exc:  # reported by the assertion below, with the thread's index
            errors[index] = exc
        finally:
            connection.close()

    threads = [threading.Thread(target=target, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads)
    return results, errors


@pytest.fixture
def fleet():
    # Equal, empty MCs: with no preference, a race would show as different MCs for one meeting.
    return [make_controller(region=REGION, controller_id=f"mc-{index}") for index in range(6)]


def test_concurrent_assignments_of_one_meeting_agree(fleet):
    meeting = make_meeting(host=make_user())
    results, errors = run_concurrently(lambda _: meeting_assign(meeting_id=meeting.pk, region=REGION))
    assert not errors, errors
    assert len({result.controller_id for result in results.values()}) == 1
    assert len({result.assignment_id for result in results.values()}) == 1
    assert sum(not result.reused for result in results.values()) == 1
    assert MeetingAssignment.objects.filter(meeting=meeting).count() == 1
    assert sum(load(mc) for mc in MeetingController.objects.all()) == 1
    assert OutboxEvent.objects.filter(event_type="meeting_assigned").count() == 1


def test_concurrent_replacement_of_a_stale_assignment_agrees(fleet):
    silent_since = timezone.now() - timedelta(seconds=settings.HEARTBEAT_STALE_THRESHOLD_SECONDS + 5)
    dead = make_controller(region=REGION, controller_id="mc-dead", current_meetings=1, last_heartbeat_at=silent_since)
    meeting = make_meeting(host=make_user())
    MeetingAssignment.objects.create(meeting=meeting, meeting_controller=dead, region=REGION, assigned_by_gc_id="gc")
    results, errors = run_concurrently(lambda _: meeting_assign(meeting_id=meeting.pk, region=REGION))
    assert not errors, errors
    [chosen] = {result.controller_id for result in results.values()}
    assert chosen != "mc-dead"
    active = MeetingAssignment.objects.filter(meeting=meeting, ended_at__isnull=True)
    assert [row.meeting_controller_id for row in active] == [chosen]
    ended = MeetingAssignment.objects.filter(meeting=meeting, ended_at__isnull=False)
    assert [(row.meeting_controller_id, row.end_reason) for row in ended] == [("mc-dead", "reassigned")]
    assert load(MeetingController.objects.get(pk="mc-dead")) == 0
    assert MeetingController.objects.get(pk=chosen).assigned_since_heartbeat == 1


def test_concurrent_rest_joins_of_one_meeting_get_one_mc(fleet):
    host = make_user()
    meeting = make_meeting(host=host)
    users = [make_user() for _ in range(THREADS)]
    tokens = [user_token(user) for user in users]

    def join(index):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[index]}")
        response = client.post(f"/api/v1/meetings/{meeting.meeting_code}/join", {}, format="json")
        return response.status_code, response.json()

    results, errors = run_concurrently(join)
    assert not errors, errors
    assert Counter(status for status, _ in results.values()) == {201: THREADS}
    assert len({body["controller_id"] for _, body in results.values()}) == 1
    assert MeetingAssignment.objects.filter(meeting=meeting, ended_at__isnull=True).count() == 1
    assert MeetingAssignment.objects.filter(meeting=meeting).count() == 1
    assert MeetingParticipant.objects.filter(meeting=meeting).count() == THREADS
    assert sum(load(mc) for mc in MeetingController.objects.all()) == 1


def test_concurrent_joins_never_overfill_a_meeting(fleet):
    meeting = make_meeting(host=make_user(), max_participants=5)
    tokens = [user_token(make_user()) for _ in range(THREADS)]

    def join(index):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {tokens[index]}")
        return client.post(f"/api/v1/meetings/{meeting.pk}/join", {}, format="json").status_code

    results, errors = run_concurrently(join)
    assert not errors, errors
    assert Counter(results.values()) == {201: 5, 409: THREADS - 5}
    assert MeetingParticipant.objects.filter(meeting=meeting).count() == 5


def test_concurrent_joins_of_many_meetings_never_exceed_an_mc(fleet):
    MeetingController.objects.update(max_meetings=3)  # 6 MCs x 3 = 18 seats for 24 meetings
    meetings = [make_meeting(host=make_user()) for _ in range(24)]
    results, errors = run_concurrently(
        lambda index: meeting_assign(meeting_id=meetings[index].pk, region=REGION).controller_id, count=24
    )
    from darktower.errors import NoCapacity

    assert all(isinstance(error, NoCapacity) for error in errors.values()), errors
    assert len(results) == 18 and len(errors) == 6
    loads = {mc.controller_id: load(mc) for mc in MeetingController.objects.all()}
    assert set(loads.values()) == {3}
    assert Counter(results.values()) == Counter(dict.fromkeys(loads, 3))
    assert MeetingAssignment.objects.filter(ended_at__isnull=True).count() == 18


def test_a_deadlock_with_another_writer_is_a_retryable_503_never_a_500(fleet):
    """A writer that locks an MC row and then the meeting row (the opposite order of a join) deadlocks with
    the join; PostgreSQL aborts one of the two. If it is the join, the client gets 503 `retry` and nothing of
    the join remains."""
    MeetingController.objects.exclude(pk="mc-0").delete()
    meeting = make_meeting(host=make_user())
    token = user_token(make_user())
    mc_locked, outcome = threading.Event(), {}

    def other_writer():
        try:
            with transaction.atomic():
                MeetingController.objects.filter(pk="mc-0").update(version="locked")
                mc_locked.set()
                # The join now holds the meeting row and waits for this MC row.
                assert wait_until_blocking(), "the join never waited for the MC row"
                Meeting.objects.filter(pk=meeting.pk).update(display_name="renamed")
            outcome["writer"] = "committed"
        except OperationalError:
            outcome["writer"] = "aborted"
        except AssertionError as exc:  # reported by the assertion below
            outcome["writer"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=other_writer)
    thread.start()
    assert mc_locked.wait(timeout=10)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    response = client.post(f"/api/v1/meetings/{meeting.pk}/join", {}, format="json")
    thread.join(timeout=30)
    assert outcome["writer"] in {"committed", "aborted"}, outcome
    if response.status_code == 503:
        assert response.json()["error"]["code"] == "retry" and response["Retry-After"] == "1"
        assert outcome["writer"] == "committed"
        assert not MeetingParticipant.objects.exists() and not MeetingAssignment.objects.exists()
        assert client.post(f"/api/v1/meetings/{meeting.pk}/join", {}, format="json").status_code == 201
    else:
        assert response.status_code == 201 and outcome["writer"] == "aborted"
