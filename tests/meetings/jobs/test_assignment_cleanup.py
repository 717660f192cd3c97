"""Assignment cleanup: active assignments on unhealthy controllers end, so the next join reassigns."""

from __future__ import annotations

import pytest

from audit.models import AuditLog
from controllers.models import HealthStatus
from meetings.models import Meeting, MeetingAssignment
from meetings.services.retention import assignments_end_unhealthy
from meetings.tasks import end_unhealthy_assignments
from tests.factories import make_controller, make_meeting
from tests.fixtures.jobs import TransactionNow, ago, ahead

pytestmark = pytest.mark.django_db


def _assign(controller, **extra) -> MeetingAssignment:
    return MeetingAssignment.objects.create(
        meeting=make_meeting(status="active"), meeting_controller=controller, region=controller.region,
        assigned_by_gc_id="gc-test", assigned_at=ago(minutes=5), **extra,
    )


def test_ends_active_assignments_of_unhealthy_controllers_only():
    dead = make_controller(health=HealthStatus.UNHEALTHY)
    alive = make_controller(health=HealthStatus.HEALTHY)
    draining = make_controller(health=HealthStatus.DRAINING)
    on_dead = [_assign(dead), _assign(dead)]
    already_ended = _assign(dead)
    MeetingAssignment.objects.filter(pk=already_ended.pk).update(ended_at=TransactionNow(), end_reason="meeting_ended")
    on_alive, on_draining = _assign(alive), _assign(draining)

    ended = assignments_end_unhealthy()

    assert sorted(row.assignment_id for row in ended) == sorted(a.pk for a in on_dead)
    for assignment in on_dead:
        assignment.refresh_from_db()
        assert assignment.ended_at is not None and assignment.end_reason == "controller_unhealthy"
    already_ended.refresh_from_db()
    assert already_ended.end_reason == "meeting_ended"
    for assignment in (on_alive, on_draining):
        assignment.refresh_from_db()
        assert assignment.ended_at is None
    audits = AuditLog.objects.filter(event_type="meeting_assignment_ended")
    assert sorted(audits.values_list("target_id", flat=True)) == sorted(str(a.meeting_id) for a in on_dead)
    assert {row.metadata["controller_id"] for row in audits} == {dead.controller_id}
    assert {row.metadata["reason"] for row in audits} == {"controller_unhealthy"}

    # Idempotent: a second run (or a retried task) finds nothing.
    assert assignments_end_unhealthy() == []
    assert end_unhealthy_assignments.apply().get() == 0
    assert audits.count() == 2


def test_an_assignment_stamped_after_this_transaction_began_still_ends_cleanly():
    # Its assigned_at is later than the job's now(): ending it at now() would violate ended_at >= assigned_at.
    dead = make_controller(health=HealthStatus.UNHEALTHY)
    assignment = _assign(dead)
    MeetingAssignment.objects.filter(pk=assignment.pk).update(assigned_at=ahead(seconds=1))

    assert len(assignments_end_unhealthy()) == 1
    assignment.refresh_from_db()
    assert assignment.ended_at == assignment.assigned_at


def test_the_task_reports_how_many_it_ended():
    _assign(make_controller(health=HealthStatus.UNHEALTHY))

    assert end_unhealthy_assignments.apply().get() == 1


def test_ending_gives_back_the_mc_load_and_clears_the_meeting_pointer():
    dead = make_controller(health=HealthStatus.UNHEALTHY, current_meetings=4, assigned_since_heartbeat=1)
    reported, in_flight = _assign(dead), _assign(dead)
    Meeting.objects.filter(pk__in=[reported.meeting_id, in_flight.meeting_id]).update(
        assigned_controller_id=dead.pk, assigned_region=dead.region
    )
    # A meeting already moved to another MC keeps its new pointer.
    moved = _assign(dead)
    Meeting.objects.filter(pk=moved.meeting_id).update(assigned_controller_id="mc-elsewhere", assigned_region="x")

    assert len(assignments_end_unhealthy()) == 3

    dead.refresh_from_db()
    # Three meetings given back: the one in flight first, then two of the reported ones.
    assert (dead.assigned_since_heartbeat, dead.current_meetings) == (0, 2)
    pointers = dict(Meeting.objects.values_list("pk", "assigned_controller_id"))
    assert pointers[reported.meeting_id] is None and pointers[in_flight.meeting_id] is None
    assert pointers[moved.meeting_id] == "mc-elsewhere"
