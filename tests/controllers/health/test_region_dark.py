"""A region going dark must not blind the others: the GC is cut off only when no region of any size, in either
table, is still heard from; the per-region guard engages at more than DISRUPTION_MAX_STALE_SHARE, not at it.

Time is the database's: silence is set with `ago()` relative to the test transaction's now(), never slept."""

from __future__ import annotations

import pytest

from audit.models import AuditLog
from controllers.models import HealthStatus, HealthTransition, MediaHandler, MeetingController
from controllers.services.health import DisruptedRegion, controllers_sweep_stale
from tests.controllers.health.conftest import GRACE
from tests.factories import make_controller, make_handler
from tests.fixtures.jobs import ago

pytestmark = pytest.mark.django_db

SILENT = 60  # past the 30 s stale threshold, inside the 60 s startup grace of pending members


def _controllers(region: str, count: int, *, silent: int, health: str = HealthStatus.HEALTHY) -> list[str]:
    """`count` controllers in `region`, the first `silent` of them silent for SILENT seconds, the rest beating."""
    ids = [make_controller(region=region, health=health).controller_id for _ in range(count)]
    MeetingController.objects.filter(pk__in=ids[:silent]).update(last_heartbeat_at=ago(seconds=SILENT))
    return ids


def _handlers(region: str, count: int, *, silent: int) -> list[str]:
    ids = [make_handler(region=region).handler_id for _ in range(count)]
    MediaHandler.objects.filter(pk__in=ids[:silent]).update(last_heartbeat_at=ago(seconds=SILENT))
    return ids


def _status(controller_id: str) -> str:
    return MeetingController.objects.get(pk=controller_id).health_status


def test_a_big_region_dark_does_not_blind_the_small_region_still_beating():
    # No media handlers at all; the only region the guard can judge goes dark while a small one keeps beating.
    dark = _controllers("eu-west-1", 12, silent=9)
    small = _controllers("us-east-1", 8, silent=1)
    silent_pending = make_controller(region="us-east-1", health=HealthStatus.PENDING).controller_id
    MeetingController.objects.filter(pk=silent_pending).update(last_heartbeat_at=ago(seconds=GRACE + 1))
    assert not MediaHandler.objects.exists()

    result = controllers_sweep_stale()

    assert not result.cut_off
    # The dark region's guard works as before: nobody there is marked, each spared member is recorded.
    assert result.disrupted == [DisruptedRegion("meeting_controller", "eu-west-1", 9, 12)]
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in dark)
    guarded = HealthTransition.objects.filter(reason="disruption-guard")
    assert sorted(guarded.values_list("component_id", flat=True)) == sorted(dark[:9])
    assert not any(row.metadata["cut_off"] for row in guarded)
    # The small region's silent members are marked; the ones beating are not.
    assert sorted(result.ids("meeting_controller")) == sorted([small[0], silent_pending])
    assert _status(small[0]) == _status(silent_pending) == HealthStatus.UNHEALTHY
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in small[1:])
    assert not AuditLog.objects.filter(event_type="gc_cut_off").exists()
    assert AuditLog.objects.filter(event_type="region_disrupted", target_id="eu-west-1").count() == 1


def test_handlers_beating_in_a_small_region_mean_the_gc_is_not_cut_off():
    # Every controller region is dark; the media handlers, in a region under the guard's minimum, still beat.
    dark = _controllers("eu-west-1", 10, silent=10)
    handlers = _handlers("eu-west-1", 3, silent=1)

    result = controllers_sweep_stale()

    assert not result.cut_off
    assert [row.region for row in result.disrupted] == ["eu-west-1"]
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in dark)
    assert result.ids("media_handler") == [handlers[0]]
    assert MediaHandler.objects.get(pk=handlers[0]).health_status == HealthStatus.UNHEALTHY
    assert not AuditLog.objects.filter(event_type="gc_cut_off").exists()


def test_truly_nobody_beating_is_a_cut_off_and_nobody_is_marked(caplog):
    big = _controllers("eu-west-1", 10, silent=10)
    small = _controllers("us-east-1", 3, silent=3)
    handlers = _handlers("us-east-1", 2, silent=2)

    with caplog.at_level("ERROR", logger="controllers.services.health"):
        result = controllers_sweep_stale()

    assert result.cut_off and result.marked == []
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in big + small)
    assert not MediaHandler.objects.exclude(health_status=HealthStatus.HEALTHY).exists()
    guarded = HealthTransition.objects.filter(reason="disruption-guard")
    assert sorted(guarded.values_list("component_id", flat=True)) == sorted(big + small + handlers)
    assert all(row.metadata["cut_off"] for row in guarded)
    assert AuditLog.objects.filter(event_type="gc_cut_off").count() == 1
    assert "the GC looks cut off" in caplog.text


def test_a_region_at_exactly_the_share_is_not_disrupted_and_one_more_stale_member_is():
    # DISRUPTION_MAX_STALE_SHARE is 0.55: 11 of 20 is exactly the share, 12 of 20 is more.
    at_share = _controllers("eu-west-1", 20, silent=11)
    over_share = _controllers("us-east-1", 20, silent=12)

    result = controllers_sweep_stale()

    assert result.disrupted == [DisruptedRegion("meeting_controller", "us-east-1", 12, 20)]
    assert sorted(result.ids("meeting_controller")) == sorted(at_share[:11])
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in over_share)
    assert not result.cut_off


def test_a_small_region_at_exactly_the_share_is_still_heard_from(settings):
    settings.DISRUPTION_MAX_STALE_SHARE = 0.5
    dark = _controllers("eu-west-1", 10, silent=10)
    half = _controllers("us-east-1", 4, silent=2)

    result = controllers_sweep_stale()

    assert not result.cut_off
    assert sorted(result.ids("meeting_controller")) == sorted(half[:2])
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in dark)

    # One more silent member there and no region is heard from any more: cut off, nobody marked.
    MeetingController.objects.filter(pk__in=half[:2]).update(health_status=HealthStatus.HEALTHY)
    MeetingController.objects.filter(pk=half[2]).update(last_heartbeat_at=ago(seconds=SILENT))
    result = controllers_sweep_stale()
    assert result.cut_off and result.marked == []
