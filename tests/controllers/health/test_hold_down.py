"""Hold-down: a member the sweep marked unhealthy returns only after UNHEALTHY_HOLD_DOWN_SECONDS and
UNHEALTHY_RECOVERY_HEARTBEATS good heartbeats; pending members are promoted by their first good heartbeat; heartbeats
that stop and start around the threshold do not toggle the state."""

from __future__ import annotations

import pytest
from django.db.models.functions import Now

from controllers.members import CONTROLLERS, HANDLERS
from controllers.models import HealthStatus, HealthTransition, MediaHandler, MeetingController
from controllers.services.health import RecoveryReport, controllers_sweep_stale, heartbeat_recovery
from controllers.services.transitions import health_transition
from tests.controllers.health.conftest import HOLD_DOWN
from tests.factories import make_controller, make_handler

pytestmark = pytest.mark.django_db


def _heartbeat(controller_id: str, reported: str = HealthStatus.HEALTHY) -> list:
    """What the heartbeat flush does for one good heartbeat: recovery first, then the heartbeat's own UPDATE."""
    changed = heartbeat_recovery(kind=CONTROLLERS, reports=[RecoveryReport(controller_id, reported)])
    MeetingController.objects.filter(pk=controller_id).update(last_heartbeat_at=Now())
    return changed


def _row(controller_id: str) -> MeetingController:
    return MeetingController.objects.get(pk=controller_id)


def _reasons(controller_id: str) -> list[tuple[str | None, str, str]]:
    return list(
        HealthTransition.objects.filter(component_id=controller_id)
        .order_by("created_at", "id")
        .values_list("from_status", "to_status", "reason")
    )


def _mark_stale(controller_id: str, advance) -> None:
    advance(31)
    assert controllers_sweep_stale().ids("meeting_controller") == [controller_id]


def test_pending_is_promoted_by_its_first_good_heartbeat():
    healthy = make_controller(health=HealthStatus.PENDING).controller_id
    degraded = make_controller(health=HealthStatus.PENDING).controller_id
    untouched = make_controller(health=HealthStatus.HEALTHY).controller_id

    changed = heartbeat_recovery(
        kind=CONTROLLERS,
        reports=[RecoveryReport(healthy), RecoveryReport(degraded, HealthStatus.DEGRADED), RecoveryReport(untouched)],
    )

    assert {(row.member_id, row.from_status, row.to_status) for row in changed} == {
        (healthy, "pending", "healthy"), (degraded, "pending", "degraded"),
    }
    assert _row(healthy).health_status == HealthStatus.HEALTHY
    assert _row(degraded).health_status == HealthStatus.DEGRADED
    assert _reasons(healthy) == [("pending", "healthy", "heartbeat")]
    assert _reasons(untouched) == []


def test_unhealthy_needs_the_hold_down_and_two_good_heartbeats(advance):
    controller_id = make_controller().controller_id
    _mark_stale(controller_id, advance)
    row = _row(controller_id)
    assert row.unhealthy_since is not None and row.good_heartbeats == 0

    # Two good heartbeats at once are not enough: the hold-down has not passed.
    _heartbeat(controller_id)
    advance(10)
    changed = _heartbeat(controller_id)
    assert [(c.from_status, c.to_status) for c in changed] == [("unhealthy", "unhealthy")]
    assert _row(controller_id).health_status == HealthStatus.UNHEALTHY
    assert _row(controller_id).good_heartbeats == 2

    # The hold-down passes while heartbeats keep coming: the next one promotes it.
    for _ in range(4):
        advance(10)
        _heartbeat(controller_id)
        assert _row(controller_id).health_status == HealthStatus.UNHEALTHY
    advance(10)
    changed = _heartbeat(controller_id)

    assert [(c.from_status, c.to_status) for c in changed] == [("unhealthy", "healthy")]
    row = _row(controller_id)
    assert (row.health_status, row.unhealthy_since, row.good_heartbeats) == (HealthStatus.HEALTHY, None, 0)
    assert _reasons(controller_id) == [("healthy", "unhealthy", "stale"), ("unhealthy", "healthy", "hold-down-cleared")]
    cleared = HealthTransition.objects.get(component_id=controller_id, reason="hold-down-cleared")
    assert cleared.metadata == {"good_heartbeats": 7} and cleared.actor_type == "system"


def test_the_hold_down_alone_is_not_enough_without_the_heartbeats(settings, advance):
    settings.UNHEALTHY_RECOVERY_HEARTBEATS = 3
    controller_id = make_controller().controller_id
    _mark_stale(controller_id, advance)
    advance(HOLD_DOWN + 1)

    _heartbeat(controller_id)
    _heartbeat(controller_id)
    assert _row(controller_id).health_status == HealthStatus.UNHEALTHY
    assert _heartbeat(controller_id)[0].to_status == HealthStatus.HEALTHY


def test_heartbeats_stopping_and_starting_around_the_threshold_do_not_toggle_the_state(advance):
    controller_id = make_controller().controller_id
    _mark_stale(controller_id, advance)

    # Five cycles of 30 s of heartbeats every 10 s, then 35 s of silence: without the hold-down restart, the
    # accumulated time since the first mark would pass the hold-down and each cycle would flip it twice.
    for _ in range(5):
        for _ in range(3):
            _heartbeat(controller_id)
            advance(10)
        advance(25)
        result = controllers_sweep_stale()
        assert result.marked == []
        assert result.hold_down_restarted == {"meeting_controller": 1}
        assert _row(controller_id).health_status == HealthStatus.UNHEALTHY
        assert _row(controller_id).good_heartbeats == 0

    # Steady heartbeats for the hold-down: it comes back exactly once.
    for _ in range(HOLD_DOWN // 10 + 1):
        _heartbeat(controller_id)
        advance(10)
        controllers_sweep_stale()
    assert _row(controller_id).health_status == HealthStatus.HEALTHY
    assert _reasons(controller_id) == [("healthy", "unhealthy", "stale"), ("unhealthy", "healthy", "hold-down-cleared")]


def test_members_an_operator_made_unhealthy_are_not_recovered_by_heartbeats(advance):
    controller_id = make_controller().controller_id
    assert health_transition(
        kind=CONTROLLERS, ids=[controller_id], from_states=[HealthStatus.HEALTHY], to_status="unhealthy",
        reason="operator", actor_type="user",
    )
    advance(HOLD_DOWN + 1)

    for _ in range(3):
        assert _heartbeat(controller_id) == []
    assert _row(controller_id).health_status == HealthStatus.UNHEALTHY


def test_media_handlers_recover_the_same_way(advance):
    handler_id = make_handler().handler_id
    advance(31)
    assert controllers_sweep_stale().ids("media_handler") == [handler_id]
    advance(HOLD_DOWN + 1)
    reports = [RecoveryReport(handler_id)]

    assert not heartbeat_recovery(kind=HANDLERS, reports=reports)[0].changed
    assert heartbeat_recovery(kind=HANDLERS, reports=reports)[0].to_status == HealthStatus.HEALTHY
    assert MediaHandler.objects.get(pk=handler_id).health_status == HealthStatus.HEALTHY
    assert list(
        HealthTransition.objects.filter(component_type="handler", component_id=handler_id)
        .order_by("id").values_list("reason", flat=True)
    ) == ["stale", "hold-down-cleared"]


def test_only_healthy_or_degraded_reports_recover():
    with pytest.raises(ValueError):
        heartbeat_recovery(kind=CONTROLLERS, reports=[RecoveryReport("mc-x", HealthStatus.DRAINING)])
    assert heartbeat_recovery(kind=CONTROLLERS, reports=[]) == []
