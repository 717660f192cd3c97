"""Operators' actions on a controller: compare-and-set state changes, audited with the operator's id."""

from __future__ import annotations

import pytest

from audit.models import AuditLog, OutboxEvent
from controllers.models import HealthStatus, HealthTransition, MeetingController
from controllers.services.operations import (
    controller_drain,
    controller_end_assignments,
    controller_mark_unhealthy,
    controller_undrain,
)
from darktower.errors import Conflict, InvalidInput, NotFound
from meetings.models import Meeting, MeetingAssignment
from tests.factories import make_controller, make_meeting

pytestmark = pytest.mark.django_db


def _status(controller_id: str) -> str:
    return MeetingController.objects.values_list("health_status", flat=True).get(pk=controller_id)


def _assign(meeting: Meeting, controller: MeetingController) -> MeetingAssignment:
    Meeting.objects.filter(pk=meeting.pk).update(assigned_controller_id=controller.pk)
    return MeetingAssignment.objects.create(meeting=meeting, meeting_controller=controller, region=controller.region)


def test_drain_sets_deadline_and_audits_the_operator(operator):
    mc = make_controller()
    started = controller_drain(controller_id=mc.pk, actor_user_id=operator.pk, deadline_seconds=120)
    assert started.from_status == HealthStatus.HEALTHY
    assert _status(mc.pk) == HealthStatus.DRAINING
    row = MeetingController.objects.get(pk=mc.pk)
    assert row.drain_deadline is not None
    audit = AuditLog.objects.get(event_type="controller_drain_started", target_id=mc.pk)
    assert audit.actor_user_id == operator.pk
    assert HealthTransition.objects.filter(component_id=mc.pk, to_status="draining", reason="operator").exists()


def test_drain_rejects_unknown_controller_and_bad_deadline(operator):
    with pytest.raises(NotFound):
        controller_drain(controller_id="mc-nope", actor_user_id=operator.pk)
    mc = make_controller()
    with pytest.raises(InvalidInput):
        controller_drain(controller_id=mc.pk, actor_user_id=operator.pk, deadline_seconds=-1)
    assert _status(mc.pk) == HealthStatus.HEALTHY


def test_undrain_returns_to_pending_and_refuses_a_healthy_controller(operator):
    mc = make_controller()
    with pytest.raises(Conflict):
        controller_undrain(controller_id=mc.pk, actor_user_id=operator.pk)
    controller_drain(controller_id=mc.pk, actor_user_id=operator.pk)
    changed = controller_undrain(controller_id=mc.pk, actor_user_id=operator.pk)
    assert (changed.from_status, changed.to_status) == ("draining", "pending")
    assert _status(mc.pk) == HealthStatus.PENDING
    assert MeetingController.objects.get(pk=mc.pk).drain_deadline is None
    assert AuditLog.objects.get(event_type="controller_undrained", target_id=mc.pk).actor_user_id == operator.pk
    with pytest.raises(NotFound):
        controller_undrain(controller_id="mc-nope", actor_user_id=operator.pk)


def test_mark_unhealthy_is_compare_and_set(operator):
    mc = make_controller(health=HealthStatus.DEGRADED)
    changed = controller_mark_unhealthy(controller_id=mc.pk, actor_user_id=operator.pk)
    assert changed.from_status == HealthStatus.DEGRADED
    assert _status(mc.pk) == HealthStatus.UNHEALTHY
    audit = AuditLog.objects.get(event_type="controller_unhealthy", target_id=mc.pk)
    assert audit.actor_user_id == operator.pk and audit.metadata["reason"] == "operator"
    event = OutboxEvent.objects.get(event_type="controller_unhealthy", aggregate_id=mc.pk)
    # One spelling for every controller_unhealthy event: the sweep's and the drain deadline's (the relay's filter).
    assert event.aggregate_type == "controller"
    assert event.payload == {"id": mc.pk, "region": mc.region, "from_status": "degraded", "to_status": "unhealthy",
                             "reason": "operator"}
    with pytest.raises(Conflict):
        controller_mark_unhealthy(controller_id=mc.pk, actor_user_id=operator.pk)
    with pytest.raises(NotFound):
        controller_mark_unhealthy(controller_id="mc-nope", actor_user_id=operator.pk)


def test_end_assignments_ends_only_this_controllers_active_rows(operator, owner):
    mc, other = make_controller(), make_controller()
    first, second, elsewhere = (make_meeting(host=owner) for _ in range(3))
    _assign(first, mc)
    _assign(second, mc)
    _assign(elsewhere, other)
    assert controller_end_assignments(controller_id=mc.pk, actor_user_id=operator.pk) == 2
    assert not MeetingAssignment.objects.filter(meeting_controller=mc, ended_at__isnull=True).exists()
    assert set(MeetingAssignment.objects.filter(meeting_controller=mc).values_list("end_reason", flat=True)) == {
        "reassigned"
    }
    assert MeetingAssignment.objects.filter(meeting_controller=other, ended_at__isnull=True).count() == 1
    assert Meeting.objects.get(pk=first.pk).assigned_controller_id is None
    assert Meeting.objects.get(pk=elsewhere.pk).assigned_controller_id == other.pk
    audit = AuditLog.objects.get(event_type="controller_assignments_ended", target_id=mc.pk)
    assert audit.metadata == {"ended": 2} and audit.actor_user_id == operator.pk
    assert controller_end_assignments(controller_id=mc.pk, actor_user_id=operator.pk) == 0
    with pytest.raises(NotFound):
        controller_end_assignments(controller_id="mc-nope", actor_user_id=operator.pk)


def test_end_assignments_gives_back_what_they_held_on_the_controller(operator, owner):
    mc = make_controller(current_meetings=5, assigned_since_heartbeat=1, reserved_participants=300)
    large, small = make_meeting(host=owner), make_meeting(host=owner)
    Meeting.objects.filter(pk__in=[large.pk, small.pk]).update(assigned_controller_id=mc.pk, assigned_region=mc.region)
    MeetingAssignment.objects.create(meeting=large, meeting_controller=mc, region=mc.region, reserved_participants=300)
    MeetingAssignment.objects.create(meeting=small, meeting_controller=mc, region=mc.region)

    assert controller_end_assignments(controller_id=mc.pk, actor_user_id=operator.pk) == 2

    row = MeetingController.objects.get(pk=mc.pk)
    # Two meetings off its load: the in-flight one first, then one it had reported.
    assert (row.current_meetings, row.assigned_since_heartbeat, row.reserved_participants) == (4, 0, 0)
    assert set(Meeting.objects.filter(pk__in=[large.pk, small.pk]).values_list(
        "assigned_controller_id", "assigned_region")) == {(None, None)}
