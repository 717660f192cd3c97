"""A reassignment gives back the old MC's slot and claims another MC's: it holds two MC rows, and the heartbeat
flush locks the rows of its batch in controller_id order. The reassignment must take its two rows in that same
order, before it changes either, or a flush (or another reassignment) that holds one of them while waiting for
the other deadlocks with it.

Each actor runs in its own thread on its own connection with real commits; the steps are ordered by polling
pg_locks (who waits for whom), never by time."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection, connections, transaction
from django.utils import timezone

from controllers.members import CONTROLLERS
from controllers.models import MeetingController
from controllers.services.beats import Beat, beats_flush
from meetings.models import MeetingAssignment
from meetings.services.assignment import meeting_assign
from meetings.services.participants import meeting_join
from tests.factories import make_controller, make_meeting

pytestmark = pytest.mark.django_db(transaction=True)

REGION = "us-east-1"


def _waiting_backends() -> int:
    """Backends of this test database that wait for a lock another backend holds."""
    with connections["default"].cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                       "AND cardinality(pg_blocking_pids(pid)) > 0")
        return int(cursor.fetchone()[0])


def _wait_for_waiters(count: int, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while _waiting_backends() < count:
        assert time.monotonic() < deadline, f"fewer than {count} backends ever waited for a lock"
        time.sleep(0.01)


class Actor(threading.Thread):
    """Runs `work` on its own connection; keeps its result or its exception."""

    def __init__(self, work: Callable[[], Any]) -> None:
        super().__init__(daemon=True)
        self.work, self.result, self.error = work, None, None

    def run(self) -> None:
        try:
            self.result = self.work()
        except Exception as exc:  # asserted on by the test, with the actor's name
            self.error = exc
        finally:
            connection.close()


def _assign(meeting, owner) -> str:
    return meeting_assign(meeting_id=meeting.pk, region=REGION).controller_id


def _join(meeting, owner) -> str:
    # The join's statement (meetings 0008) reassigns in the database, by the same order.
    return meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=owner).assignment.controller_id


@pytest.mark.parametrize("reassign", [_assign, _join], ids=["meeting_assign", "meeting_join"])
def test_two_reassignments_and_a_flush_take_the_mc_rows_in_one_order(owner, reassign):
    # mc-a takes the meetings; mc-m is in another region (no candidate), the flush's gate; mc-z is stale, so the
    # meetings it runs are reassigned, and it beats again in the same flush.
    make_controller(controller_id="mc-a", region=REGION)
    make_controller(controller_id="mc-m", region="eu-west-1")
    make_controller(controller_id="mc-z", region=REGION, current_meetings=2,
                    last_heartbeat_at=timezone.now() - timedelta(hours=1))
    meetings = [make_meeting(host=owner) for _ in range(2)]
    for meeting in meetings:
        MeetingAssignment.objects.create(meeting=meeting, meeting_controller_id="mc-z", region=REGION,
                                         assigned_by_gc_id="gc-test")
    beats = [Beat(member_id, "healthy", {"current_meetings": None}) for member_id in ("mc-a", "mc-m", "mc-z")]

    gate = connections.create_connection("default")
    try:
        with gate.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("SELECT 1 FROM meeting_controllers WHERE controller_id = 'mc-m' FOR UPDATE")
        # The flush locks mc-a, then waits at mc-m.
        flush = Actor(lambda: beats_flush(kind=CONTROLLERS, beats=beats, known={}))
        flush.start()
        _wait_for_waiters(1)
        # The reassignments find mc-z stale and want mc-a, which the flush holds.
        reassignments = [Actor(lambda meeting=meeting: reassign(meeting, owner)) for meeting in meetings]
        for number, reassignment in enumerate(reassignments, start=2):
            reassignment.start()
            _wait_for_waiters(number)
        with gate.cursor() as cursor:
            cursor.execute("COMMIT")
    finally:
        gate.close()
    for actor in (flush, *reassignments):
        actor.join(timeout=60)
        assert not actor.is_alive()

    assert [actor.error for actor in (flush, *reassignments)] == [None, None, None]
    assert {outcome.member_id for outcome in flush.result.outcomes} <= {"mc-a", "mc-m", "mc-z"}
    assert [reassignment.result for reassignment in reassignments] == ["mc-a", "mc-a"]
    active = MeetingAssignment.objects.filter(ended_at__isnull=True)
    assert sorted(active.values_list("meeting_controller_id", flat=True)) == ["mc-a", "mc-a"]
    assert MeetingAssignment.objects.filter(meeting_controller_id="mc-z", end_reason="reassigned").count() == 2
    with transaction.atomic():
        assert MeetingController.objects.get(pk="mc-a").assigned_since_heartbeat == 2
