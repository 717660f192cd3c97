"""The stale sweep: the startup grace of pending members, the sweep-gap grace, the all-regions
cut-off, and a transition row for every member it marks."""

from __future__ import annotations

import pytest

from audit.models import AuditLog
from controllers.models import HealthStatus, HealthTransition, MediaHandler, MeetingController, SweepState
from controllers.services.health import controllers_sweep_stale
from controllers.tasks import sweep_stale
from tests.controllers.health.conftest import GRACE, SWEEP_INTERVAL, THRESHOLD
from tests.factories import make_controller, make_handler
from tests.fixtures.jobs import ago

pytestmark = pytest.mark.django_db


def _silent(ids: list[str], seconds: float) -> None:
    MeetingController.objects.filter(pk__in=ids).update(last_heartbeat_at=ago(seconds=seconds))


def _status(controller_id: str) -> str:
    return MeetingController.objects.get(pk=controller_id).health_status


def _fleet(region: str, count: int, *, stale: int) -> list[str]:
    ids = [make_controller(region=region).controller_id for _ in range(count)]
    _silent(ids[:stale], 60)
    return ids


def test_pending_members_that_never_heartbeated_get_the_startup_grace():
    pending = make_controller(health=HealthStatus.PENDING).controller_id
    healthy = make_controller(health=HealthStatus.HEALTHY).controller_id
    _silent([pending, healthy], THRESHOLD + 15)

    assert controllers_sweep_stale().ids("meeting_controller") == [healthy]
    assert _status(pending) == HealthStatus.PENDING

    _silent([pending], GRACE)
    assert controllers_sweep_stale().marked == []
    _silent([pending], GRACE + 0.001)
    assert controllers_sweep_stale().ids("meeting_controller") == [pending]


def test_every_mark_writes_its_transition_in_the_same_statement():
    controller_id = make_controller(health=HealthStatus.DEGRADED).controller_id
    handler_id = make_handler().handler_id
    _silent([controller_id], 45)
    MediaHandler.objects.filter(pk=handler_id).update(last_heartbeat_at=ago(seconds=45))

    controllers_sweep_stale()

    row = HealthTransition.objects.get(component_id=controller_id)
    assert (row.component_type, row.region, row.from_status, row.to_status, row.reason, row.actor_type) == (
        "controller", "us-east-1", "degraded", "unhealthy", "stale", "system"
    )
    assert row.metadata["threshold_seconds"] == THRESHOLD and "last_heartbeat_at" in row.metadata
    assert HealthTransition.objects.get(component_id=handler_id).component_type == "handler"
    controller = MeetingController.objects.get(pk=controller_id)
    assert controller.unhealthy_since is not None and controller.good_heartbeats == 0
    assert controller.health_changed_at == controller.unhealthy_since

    controllers_sweep_stale(dry_run=True)
    assert HealthTransition.objects.count() == 2


def test_a_dry_run_writes_no_transition_and_no_sweep_time():
    _silent([make_controller().controller_id], 45)

    assert len(controllers_sweep_stale(dry_run=True).marked) == 1

    assert not HealthTransition.objects.exists()
    assert not SweepState.objects.exists()


def test_the_first_sweep_after_a_gap_marks_nobody_and_grants_a_fresh_grace(caplog):
    controllers_sweep_stale()  # the sweep's memory: it ran
    stale = _fleet("eu-west-1", 3, stale=2)
    pending = make_controller(health=HealthStatus.PENDING).controller_id
    _silent([pending], GRACE + 5)
    draining = make_controller(health=HealthStatus.DRAINING).controller_id
    _silent([draining], 600)
    SweepState.objects.update(last_run_at=ago(seconds=3 * SWEEP_INTERVAL + 1))

    with caplog.at_level("WARNING", logger="controllers.services.health"):
        result = controllers_sweep_stale()

    assert result.marked == [] and result.gap is not None
    assert result.gap.seconds == pytest.approx(3 * SWEEP_INTERVAL + 1)
    assert result.gap.spared == {"meeting_controller": 3, "media_handler": 0}
    assert all(_status(controller_id) != HealthStatus.UNHEALTHY for controller_id in [*stale, pending])
    spared = HealthTransition.objects.filter(reason="sweep-gap")
    assert sorted(spared.values_list("component_id", flat=True)) == sorted([*stale[:2], pending])
    assert all(row.from_status == row.to_status for row in spared)
    audit = AuditLog.objects.get(event_type="stale_sweep_gap")
    assert audit.result == "failure" and audit.metadata["spared"]["meeting_controller"] == 3
    assert "had not run for 16.0 s" in caplog.text
    # The heartbeats themselves are not faked.
    assert MeetingController.objects.get(pk=stale[0]).last_heartbeat_at < MeetingController.objects.get(
        pk=stale[2]).last_heartbeat_at

    # The next sweeps judge from the grace: nobody is stale until a full threshold after it.
    assert controllers_sweep_stale().marked == []
    SweepState.objects.update(grace_from=ago(seconds=THRESHOLD + 1))
    assert sorted(controllers_sweep_stale().ids("meeting_controller")) == sorted(stale[:2])
    SweepState.objects.update(grace_from=ago(seconds=GRACE + 1))
    assert controllers_sweep_stale().ids("meeting_controller") == [pending]


def test_a_pause_of_exactly_three_intervals_is_not_a_gap():
    controllers_sweep_stale()
    controller_id = _fleet("eu-west-1", 1, stale=1)[0]
    SweepState.objects.update(last_run_at=ago(seconds=3 * SWEEP_INTERVAL))

    result = controllers_sweep_stale()

    assert result.gap is None and result.ids("meeting_controller") == [controller_id]


def test_no_record_of_an_earlier_sweep_is_not_a_gap():
    controller_id = _fleet("eu-west-1", 1, stale=1)[0]

    result = controllers_sweep_stale()

    assert result.gap is None and result.ids("meeting_controller") == [controller_id]
    assert SweepState.objects.get().grace_from is None


def test_every_region_disrupted_at_once_marks_none_anywhere(caplog):
    east = _fleet("us-east-1", 10, stale=8)
    west = _fleet("eu-west-1", 12, stale=12)
    small = _fleet("ap-south-1", 3, stale=3)  # below the guard's minimum: only the cut-off spares it

    with caplog.at_level("ERROR", logger="controllers.services.health"):
        result = sweep_stale.apply().get()

    assert result["marked"] == [] and result["cut_off"] is True
    assert result["disrupted_regions"] == ["eu-west-1", "us-east-1"]
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in east + west + small)
    # No state changed; every stale member the cut-off spared has a disruption-guard row (from = to).
    guarded = HealthTransition.objects.filter(reason="disruption-guard")
    assert sorted(guarded.values_list("component_id", flat=True)) == sorted(east[:8] + west + small)
    assert all(row.from_status == row.to_status == "healthy" and row.metadata["cut_off"] for row in guarded)
    assert guarded.get(component_id=east[0]).metadata["region_stale"] == 8
    assert not HealthTransition.objects.exclude(reason="disruption-guard").exists()
    event = AuditLog.objects.get(event_type="gc_cut_off")
    assert event.result == "failure" and event.metadata["regions"] == ["eu-west-1", "us-east-1"]
    assert AuditLog.objects.filter(event_type="region_disrupted").count() == 2
    assert "the GC looks cut off" in caplog.text


def test_one_guarded_region_still_reporting_means_not_cut_off():
    east = _fleet("us-east-1", 10, stale=8)
    west = _fleet("eu-west-1", 10, stale=1)
    small = _fleet("ap-south-1", 3, stale=3)

    result = controllers_sweep_stale()

    assert not result.cut_off
    assert sorted(result.ids("meeting_controller")) == sorted(west[:1] + small)
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in east)
    assert not AuditLog.objects.filter(event_type="gc_cut_off").exists()


def test_a_disrupted_region_records_the_members_the_guard_spared_once_per_audit_period():
    east = _fleet("us-east-1", 10, stale=8)
    west = _fleet("eu-west-1", 10, stale=1)

    result = controllers_sweep_stale()

    assert result.guarded == {"meeting_controller": 8} and not result.cut_off
    guarded = HealthTransition.objects.filter(reason="disruption-guard")
    assert sorted(guarded.values_list("component_id", flat=True)) == sorted(east[:8])
    row = guarded.get(component_id=east[0])
    assert (row.from_status, row.to_status, row.actor_type, row.region) == ("healthy", "healthy", "system", "us-east-1")
    assert (row.metadata["region_stale"], row.metadata["region_live"], row.metadata["cut_off"]) == (8, 10, False)
    assert HealthTransition.objects.get(component_id=west[0]).reason == "stale"

    # The disruption lasts: the next sweep repeats neither the audit row nor the guard rows.
    assert controllers_sweep_stale().guarded == {}
    assert guarded.count() == 8
    assert AuditLog.objects.filter(event_type="region_disrupted").count() == 1
