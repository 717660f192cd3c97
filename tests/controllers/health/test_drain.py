"""Bounded, reversible drain: drain and undrain, and at the deadline the remaining assignments are
ended or moved to the target, each recorded, then the MC goes unhealthy unless it went away cleanly."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db.models.functions import Now

from audit.models import AuditLog, OutboxEvent
from controllers.members import CONTROLLERS
from controllers.models import HealthStatus, HealthTransition, MeetingController
from controllers.services.drain import drain_begin, drain_cancel
from controllers.services.health import RecoveryReport, heartbeat_recovery
from darktower.errors import Conflict, InvalidInput, NoCapacity, NotFound
from darktower.metrics import REGISTRY
from meetings.models import Meeting, MeetingAssignment
from meetings.services.assignment import meeting_assign
from meetings.services.drain_deadlines import drains_enforce
from meetings.tasks import enforce_drain_deadlines
from tests.controllers.health.conftest import HOLD_DOWN
from tests.factories import make_controller, make_meeting
from tests.fixtures.jobs import ago

pytestmark = pytest.mark.django_db


def _assign(controller: MeetingController, count: int) -> list[MeetingAssignment]:
    rows = []
    for _ in range(count):
        meeting = make_meeting(assigned_controller_id=controller.controller_id, assigned_region=controller.region)
        rows.append(MeetingAssignment.objects.create(
            meeting=meeting, meeting_controller=controller, region=controller.region, assigned_by_gc_id="gc-test"
        ))
    return rows


def _due(controller_id: str) -> None:
    MeetingController.objects.filter(pk=controller_id).update(drain_deadline=ago(seconds=1))


def _row(controller_id: str) -> MeetingController:
    return MeetingController.objects.get(pk=controller_id)


def test_drain_takes_the_mc_out_of_placement_with_the_default_deadline(operator):
    controller = make_controller()
    _assign(controller, 2)

    started = drain_begin(controller_id=controller.controller_id, actor_user_id=operator.pk)

    row = _row(controller.controller_id)
    assert row.health_status == HealthStatus.DRAINING
    assert not MeetingController.objects.available_in("us-east-1").filter(pk=controller.pk).exists()
    assert started.active_assignments == 2 and started.from_status == "healthy"
    assert row.drain_deadline - row.health_changed_at == timedelta(seconds=3600)
    transition = HealthTransition.objects.get(component_id=controller.controller_id)
    assert (transition.reason, transition.actor_type, transition.actor_user_id) == ("operator", "user", operator.pk)
    assert transition.metadata == {"deadline_seconds": 3600, "target_controller_id": None}
    audit = AuditLog.objects.get(event_type="controller_drain_started")
    assert audit.actor_user_id == operator.pk and audit.metadata["active_assignments"] == 2


def test_drain_refuses_bad_input():
    controller = make_controller()
    with pytest.raises(InvalidInput):
        drain_begin(controller_id=controller.controller_id, target_controller_id=controller.controller_id)
    with pytest.raises(InvalidInput):
        drain_begin(controller_id=controller.controller_id, deadline_seconds=-1)
    with pytest.raises(NotFound):
        drain_begin(controller_id=controller.controller_id, target_controller_id="mc-nowhere")
    with pytest.raises(NotFound):
        drain_begin(controller_id="mc-nowhere")
    assert _row(controller.controller_id).health_status == HealthStatus.HEALTHY
    assert not HealthTransition.objects.exists()


def test_redrain_moves_the_deadline_without_a_new_transition():
    controller_id = make_controller().controller_id
    drain_begin(controller_id=controller_id, deadline_seconds=600)

    started = drain_begin(controller_id=controller_id, deadline_seconds=60)

    assert started.from_status == HealthStatus.DRAINING
    row = _row(controller_id)
    assert row.drain_deadline - row.health_changed_at == timedelta(seconds=60)
    assert HealthTransition.objects.filter(component_id=controller_id).count() == 1


def test_at_the_deadline_remaining_meetings_end_and_the_mc_goes_unhealthy(advance):
    controller = make_controller(current_meetings=2)
    assignments = _assign(controller, 2)
    drain_begin(controller_id=controller.controller_id, deadline_seconds=600)
    assert drains_enforce() == []  # not due yet
    _due(controller.controller_id)

    [done] = drains_enforce()

    assert sorted(done.ended) == sorted(row.pk for row in assignments) and done.moved == []
    assert done.marked_unhealthy
    # The ended meetings no longer point at the drained MC, and its load no longer counts them.
    assert set(Meeting.objects.filter(pk__in=[row.meeting_id for row in assignments]).values_list(
        "assigned_controller_id", flat=True)) == {None}
    assert _row(controller.controller_id).current_meetings == 0
    for row in MeetingAssignment.objects.filter(pk__in=done.ended):
        assert row.ended_at is not None and row.end_reason == "drain_deadline"
    row = _row(controller.controller_id)
    assert (row.health_status, row.drain_deadline, row.drain_target_controller_id) == ("unhealthy", None, None)
    assert list(HealthTransition.objects.filter(component_id=controller.controller_id).order_by("id")
                .values_list("reason", "to_status")) == [("operator", "draining"), ("drain-deadline", "unhealthy")]
    ended_audits = AuditLog.objects.filter(event_type="meeting_assignment_ended", metadata__reason="drain_deadline")
    assert ended_audits.count() == 2
    assert AuditLog.objects.get(event_type="controller_drain_deadline").metadata["ended"] == 2
    assert OutboxEvent.objects.filter(event_type="controller_unhealthy", aggregate_id=controller.controller_id).exists()
    assert drains_enforce() == []

    # Heartbeats do not undo a drain; undrain does, and the next good heartbeat makes it healthy.
    advance(HOLD_DOWN + 1)
    for _ in range(3):
        assert heartbeat_recovery(kind=CONTROLLERS, reports=[RecoveryReport(controller.controller_id)]) == []
    assert drain_cancel(controller_id=controller.controller_id).to_status == HealthStatus.PENDING
    changed = heartbeat_recovery(kind=CONTROLLERS, reports=[RecoveryReport(controller.controller_id)])
    assert changed[0].to_status == HealthStatus.HEALTHY


def test_at_the_deadline_meetings_move_to_the_target_as_far_as_it_has_room():
    controller = make_controller(region="eu-west-1")
    target = make_controller(region="eu-west-1", max_meetings=10, current_meetings=8, assigned_since_heartbeat=1)
    assignments = _assign(controller, 3)
    drain_begin(controller_id=controller.controller_id, target_controller_id=target.controller_id)
    _due(controller.controller_id)

    [done] = drains_enforce()

    assert len(done.moved) == 1 and len(done.ended) == 2 and done.target_controller_id == target.controller_id
    moved = MeetingAssignment.objects.get(pk=done.moved[0])
    assert moved.meeting_controller_id == target.controller_id and moved.ended_at is None
    old = MeetingAssignment.objects.get(meeting=moved.meeting, meeting_controller=controller)
    assert old.end_reason == "drain_move" and old.ended_at is not None
    assert Meeting.objects.get(pk=moved.meeting_id).assigned_controller_id == target.controller_id
    assert _row(target.controller_id).assigned_since_heartbeat == 2  # never beyond max_meetings
    assert set(MeetingAssignment.objects.filter(pk__in=done.ended).values_list("end_reason", flat=True)) == {
        "drain_deadline"
    }
    assert MeetingAssignment.objects.filter(ended_at__isnull=True, meeting_controller=controller).count() == 0
    assert {row.meeting_id for row in assignments} >= {moved.meeting_id}
    audit = AuditLog.objects.get(event_type="meeting_assigned", action="drain_move")
    assert audit.metadata["previous_controller_id"] == controller.controller_id
    assert OutboxEvent.objects.get(event_type="meeting_assigned").payload["rule"] == "drain_move"


def test_an_unavailable_target_takes_nothing():
    controller = make_controller()
    target = make_controller(health=HealthStatus.UNHEALTHY)
    _assign(controller, 1)
    drain_begin(controller_id=controller.controller_id, target_controller_id=target.controller_id)
    _due(controller.controller_id)

    [done] = drains_enforce()

    assert done.moved == [] and len(done.ended) == 1


def test_an_mc_that_went_away_cleanly_completes_its_drain_without_turning_unhealthy():
    controller_id = make_controller().controller_id
    drain_begin(controller_id=controller_id)
    MeetingController.objects.filter(pk=controller_id).update(last_heartbeat_at=ago(seconds=120))
    _due(controller_id)

    [done] = drains_enforce()

    assert not done.marked_unhealthy
    row = _row(controller_id)
    assert (row.health_status, row.drain_deadline) == (HealthStatus.DRAINING, None)
    assert AuditLog.objects.filter(event_type="controller_drain_completed", target_id=controller_id).exists()
    assert drains_enforce() == []


def test_an_idle_mc_still_heartbeating_goes_unhealthy_at_the_deadline():
    controller_id = make_controller().controller_id
    drain_begin(controller_id=controller_id)
    MeetingController.objects.filter(pk=controller_id).update(last_heartbeat_at=Now())
    _due(controller_id)

    assert drains_enforce()[0].marked_unhealthy


def test_undrain_only_applies_to_drained_mcs():
    controller_id = make_controller().controller_id
    with pytest.raises(Conflict):
        drain_cancel(controller_id=controller_id)
    with pytest.raises(NotFound):
        drain_cancel(controller_id="mc-nowhere")
    drain_begin(controller_id=controller_id, deadline_seconds=60)

    changed = drain_cancel(controller_id=controller_id)

    row = _row(controller_id)
    assert (changed.from_status, row.health_status, row.drain_deadline) == ("draining", "pending", None)
    assert AuditLog.objects.filter(event_type="controller_undrained").count() == 1


def test_the_task_calls_the_same_service():
    controller = make_controller()
    _assign(controller, 1)
    drain_begin(controller_id=controller.controller_id)
    _due(controller.controller_id)

    assert enforce_drain_deadlines.apply().get() == {"controllers": [controller.controller_id], "moved": 0, "ended": 1}


def test_a_drain_move_fills_the_target_no_further_than_placement_allows(owner, settings):
    settings.PLACEMENT_LARGE_MEETING_THRESHOLD = 100
    controller = make_controller(region="eu-west-1", current_meetings=2, reserved_participants=200)
    target = make_controller(region="eu-west-1", max_meetings=10, current_meetings=8)
    assignments = _assign(controller, 2)
    MeetingAssignment.objects.filter(pk=assignments[0].pk).update(reserved_participants=200)
    drain_begin(controller_id=controller.controller_id, target_controller_id=target.controller_id)
    _due(controller.controller_id)

    [done] = drains_enforce()

    assert len(done.moved) == 2
    source, full = _row(controller.controller_id), _row(target.controller_id)
    assert (source.current_meetings, source.reserved_participants) == (0, 0)
    assert (full.current_meetings + full.assigned_since_heartbeat, full.reserved_participants) == (10, 200)
    assert MeetingAssignment.objects.get(pk__in=done.moved, reserved_participants=200).meeting_id == \
        assignments[0].meeting_id
    # Placement sees the moved meetings before the target's next heartbeat: it is full.
    with pytest.raises(NoCapacity):
        meeting_assign(meeting_id=make_meeting(host=owner).pk, region="eu-west-1")


def test_drain_moves_are_counted_as_their_rule(django_capture_on_commit_callbacks):
    controller = make_controller(region="eu-west-1")
    target = make_controller(region="eu-west-1")
    _assign(controller, 3)
    drain_begin(controller_id=controller.controller_id, target_controller_id=target.controller_id)
    _due(controller.controller_id)
    labels = {"rule": "drain_move", "outcome": "assigned"}
    before = REGISTRY.get_sample_value("darktower_assignments_total", labels) or 0.0

    with django_capture_on_commit_callbacks(execute=True):
        [done] = drains_enforce()

    assert len(done.moved) == 3
    assert REGISTRY.get_sample_value("darktower_assignments_total", labels) - before == 3
