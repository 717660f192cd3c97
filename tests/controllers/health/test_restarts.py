"""What a controller's own words and restarts may not undo: the hold-down counts consecutive
good heartbeats only, a restart inside the hold-down does not skip it, a restart does not cancel an operator's
drain, and a drain the controller reports itself is bounded by the default deadline. Through the same services the
gRPC servicers call (controller_register, controller_heartbeat)."""

from __future__ import annotations

from datetime import timedelta

import pytest

from controllers.models import HealthStatus, HealthTransition, MeetingController
from controllers.services.drain import drain_begin
from controllers.services.health import controllers_sweep_stale
from controllers.services.registration import controller_register
from meetings.models import MeetingAssignment
from meetings.services.assignment import assignment_candidates
from meetings.services.drain_deadlines import drains_enforce
from tests.beats import controller_heartbeat
from tests.controllers.health.conftest import HOLD_DOWN
from tests.factories import make_meeting
from tests.fixtures.jobs import ago

pytestmark = pytest.mark.django_db

MC = "mc-restarts"


def register():
    return controller_register(
        controller_id=MC, region="us-east-1", grpc_endpoint="grpc://mc.internal:50052",
        webtransport_endpoint=None, max_meetings=100, max_participants=1000,
    )


def beat(reported: str = HealthStatus.HEALTHY) -> str:
    return controller_heartbeat(controller_id=MC, reported=reported, current_meetings=0).to_status


def row() -> MeetingController:
    return MeetingController.objects.get(pk=MC)


def reasons() -> list[tuple[str | None, str, str]]:
    return list(HealthTransition.objects.filter(component_id=MC).order_by("created_at", "id")
                .values_list("from_status", "to_status", "reason"))


def healthy_then_stale(advance) -> None:
    register()
    assert beat() == HealthStatus.HEALTHY
    advance(31)
    assert controllers_sweep_stale().ids("meeting_controller") == [MC]


# --- consecutive good heartbeats -------------------------------------------------------------------------------


def test_an_unhealthy_report_restarts_the_count_of_good_heartbeats(settings):
    settings.UNHEALTHY_HOLD_DOWN_SECONDS = 0
    register()
    assert beat(HealthStatus.UNHEALTHY) == HealthStatus.UNHEALTHY

    assert beat() == HealthStatus.UNHEALTHY  # 1 good
    assert beat(HealthStatus.UNHEALTHY) == HealthStatus.UNHEALTHY  # the count starts again
    assert row().good_heartbeats == 0
    assert beat() == HealthStatus.UNHEALTHY  # 1 good, not 2: they were not consecutive
    assert beat() == HealthStatus.HEALTHY
    assert reasons()[-1] == ("unhealthy", "healthy", "hold-down-cleared")


def test_an_unhealthy_report_also_restarts_the_hold_down(advance):
    healthy_then_stale(advance)
    advance(HOLD_DOWN - 5)
    assert beat() == HealthStatus.UNHEALTHY
    marked_at = row().unhealthy_since
    assert beat(HealthStatus.UNHEALTHY) == HealthStatus.UNHEALTHY
    assert row().unhealthy_since - marked_at == timedelta(seconds=HOLD_DOWN - 5)

    advance(10)  # past the first hold-down, not past the restarted one
    assert (beat(), beat()) == (HealthStatus.UNHEALTHY, HealthStatus.UNHEALTHY)
    advance(HOLD_DOWN)
    assert beat() == HealthStatus.HEALTHY


# --- restarts inside the hold-down -----------------------------------------------------------------------------


def test_a_restart_inside_the_hold_down_goes_pending_but_not_healthy_before_it_ends(advance):
    healthy_then_stale(advance)
    unhealthy_since = row().unhealthy_since
    advance(20)

    registration = register()

    assert (registration.from_status, registration.health_status) == ("unhealthy", "pending")
    assert registration.hold_down_until == unhealthy_since - timedelta(seconds=20) + timedelta(seconds=HOLD_DOWN)
    for _ in range(3):
        assert beat() == HealthStatus.PENDING
    assert assignment_candidates("us-east-1") == []
    # A second restart keeps the hold.
    assert register().hold_down_until == row().hold_down_until

    advance(HOLD_DOWN - 20 + 1)
    assert beat() == HealthStatus.HEALTHY
    assert reasons()[-2:] == [("unhealthy", "pending", "registered"), ("pending", "healthy", "hold-down-cleared")]


def test_a_held_restart_still_needs_consecutive_good_heartbeats_after_the_hold_down(advance):
    healthy_then_stale(advance)
    register()
    advance(HOLD_DOWN + 1)

    assert beat() == HealthStatus.PENDING  # the first good heartbeat since the restart: 1 of 2
    assert beat() == HealthStatus.HEALTHY


def test_a_restart_after_the_hold_down_is_promoted_by_its_first_heartbeat(advance):
    healthy_then_stale(advance)
    advance(HOLD_DOWN + 1)

    registration = register()

    assert (registration.health_status, registration.hold_down_until) == ("pending", None)
    assert beat() == HealthStatus.HEALTHY
    assert reasons()[-1] == ("pending", "healthy", "heartbeat")


def test_a_flapping_mc_that_restarts_every_time_never_toggles_to_healthy(advance):
    healthy_then_stale(advance)
    for _ in range(4):
        advance(15)
        register()
        assert beat() == HealthStatus.PENDING
        advance(61)  # silent past the startup grace: the sweep marks it again, the hold-down starts over
        assert controllers_sweep_stale().ids("meeting_controller") == [MC]
    assert [to for _, to, _ in reasons()].count("healthy") == 1  # only the very first heartbeat


# --- drains and restarts -----------------------------------------------------------------------------------------


def test_a_restart_does_not_cancel_an_operators_drain(operator):
    register()
    beat()
    target = controller_register(
        controller_id="mc-target", region="us-east-1", grpc_endpoint="grpc://t.internal:50052",
        webtransport_endpoint=None, max_meetings=10, max_participants=100,
    )
    drain_begin(controller_id=MC, deadline_seconds=900, target_controller_id=target.member_id,
                actor_user_id=operator.pk)
    before = row()

    registration = register()

    assert (registration.from_status, registration.health_status) == ("draining", "draining")
    after = row()
    assert (after.drain_deadline, after.drain_target_controller_id) == (before.drain_deadline, "mc-target")
    assert beat() == HealthStatus.DRAINING
    assert reasons()[-1] == ("healthy", "draining", "operator")


def test_a_controller_that_drained_itself_comes_back_pending_after_a_restart():
    register()
    beat()
    assert beat(HealthStatus.DRAINING) == HealthStatus.DRAINING

    registration = register()

    assert registration.health_status == HealthStatus.PENDING
    assert row().drain_deadline is None
    assert beat() == HealthStatus.HEALTHY


def test_a_self_reported_drain_gets_the_default_deadline_and_is_enforced(settings):
    settings.DRAIN_DEFAULT_DEADLINE_SECONDS = 600
    register()
    beat()
    meeting = make_meeting()
    MeetingAssignment.objects.create(meeting=meeting, meeting_controller_id=MC, region="us-east-1")

    assert beat(HealthStatus.DRAINING) == HealthStatus.DRAINING

    drained = row()
    assert drained.drain_deadline - drained.health_changed_at == timedelta(seconds=600)
    assert reasons()[-1] == ("healthy", "draining", "heartbeat")
    # Saying DRAINING again does not push the deadline back.
    beat(HealthStatus.DRAINING)
    assert row().drain_deadline == drained.drain_deadline

    MeetingController.objects.filter(pk=MC).update(drain_deadline=ago(seconds=1))
    [done] = drains_enforce()
    assert len(done.ended) == 1 and done.marked_unhealthy
    assert reasons()[-1] == ("draining", "unhealthy", "drain-deadline")
