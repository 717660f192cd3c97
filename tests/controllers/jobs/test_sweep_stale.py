"""The stale-heartbeat sweep: who is marked, who never is, the exact threshold, the per-region disruption guard,
and two sweeps at once."""

from __future__ import annotations

from collections import Counter
from io import StringIO

import pytest
from django.core.management import call_command

from audit.models import AuditLog, OutboxEvent
from controllers.models import HealthStatus, MediaHandler, MeetingController, SweepState
from controllers.services import health
from controllers.services.health import controllers_sweep_stale
from controllers.tasks import sweep_stale
from darktower.metrics import REGISTRY
from tests.factories import make_controller, make_handler
from tests.fixtures.jobs import ago, run_twice_at_once

THRESHOLD = 30


@pytest.fixture(autouse=True)
def sweep_settings(settings):
    settings.HEARTBEAT_STALE_THRESHOLD_SECONDS = THRESHOLD
    # `pending` has its own startup grace (tests/health covers it); these tests judge every state alike.
    settings.PENDING_STARTUP_GRACE_SECONDS = THRESHOLD
    settings.DISRUPTION_MAX_STALE_SHARE = 0.55
    settings.DISRUPTION_MIN_REGION_SIZE = 10
    return settings


def _controllers(region: str, count: int, *, stale: int, health_status: str = HealthStatus.HEALTHY) -> list[str]:
    """`count` controllers in `region`, the first `stale` of them silent for a minute, the rest fresh."""
    ids = [make_controller(region=region, health=health_status).controller_id for _ in range(count)]
    MeetingController.objects.filter(controller_id__in=ids[:stale]).update(last_heartbeat_at=ago(seconds=60))
    return ids


def _status(controller_id: str) -> str:
    return MeetingController.objects.get(pk=controller_id).health_status


@pytest.mark.django_db
def test_marks_stale_pending_healthy_and_degraded_but_never_draining_or_fresh():
    stale = {
        state: make_controller(region="eu-west-1", health=state).controller_id
        for state in (HealthStatus.PENDING, HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.DRAINING)
    }
    already_unhealthy = make_controller(region="eu-west-1", health=HealthStatus.UNHEALTHY).controller_id
    fresh = make_controller(region="eu-west-1", health=HealthStatus.HEALTHY).controller_id
    stale_handler = make_handler(region="eu-west-1", health=HealthStatus.HEALTHY).handler_id
    draining_handler = make_handler(region="eu-west-1", health=HealthStatus.DRAINING).handler_id
    MeetingController.objects.exclude(pk=fresh).update(last_heartbeat_at=ago(seconds=45))
    MediaHandler.objects.update(last_heartbeat_at=ago(seconds=45))

    result = controllers_sweep_stale()

    expected = {stale[HealthStatus.PENDING], stale[HealthStatus.HEALTHY], stale[HealthStatus.DEGRADED]}
    assert set(result.ids("meeting_controller")) == expected
    assert result.ids("media_handler") == [stale_handler]
    assert not result.disrupted and not result.skipped
    for controller_id in expected:
        assert _status(controller_id) == HealthStatus.UNHEALTHY
    assert _status(stale[HealthStatus.DRAINING]) == HealthStatus.DRAINING
    assert _status(already_unhealthy) == HealthStatus.UNHEALTHY
    assert _status(fresh) == HealthStatus.HEALTHY
    assert MediaHandler.objects.get(pk=draining_handler).health_status == HealthStatus.DRAINING

    audits = AuditLog.objects.filter(event_type="controller_unhealthy")
    assert sorted(audits.values_list("target_id", flat=True)) == sorted(expected)
    by_target = {row.target_id: row for row in audits}
    assert by_target[stale[HealthStatus.DEGRADED]].metadata["from_status"] == "degraded"
    assert by_target[stale[HealthStatus.PENDING]].metadata["from_status"] == "pending"
    assert by_target[stale[HealthStatus.HEALTHY]].metadata == {
        "reason": "heartbeat_stale", "from_status": "healthy", "to_status": "unhealthy", "region": "eu-west-1",
        "threshold_seconds": THRESHOLD,
        "last_heartbeat_at": by_target[stale[HealthStatus.HEALTHY]].metadata["last_heartbeat_at"],
    }
    assert all(row.actor_type == "system" and row.target_type == "meeting_controller" for row in audits)
    assert AuditLog.objects.filter(event_type="media_handler_unhealthy", target_id=stale_handler).count() == 1

    events = OutboxEvent.objects.filter(event_type="controller_unhealthy")
    assert sorted(events.values_list("aggregate_id", flat=True)) == sorted(expected)
    assert {event.aggregate_type for event in events} == {"controller"}
    assert OutboxEvent.objects.filter(
        event_type="media_handler_unhealthy", aggregate_type="media_handler", aggregate_id=stale_handler
    ).exists()

    # A second sweep finds nothing left to do.
    assert controllers_sweep_stale().marked == []


@pytest.mark.django_db
def test_the_threshold_is_exclusive_to_the_microsecond():
    at_threshold = make_controller(region="ap-south-1").controller_id
    just_past = make_controller(region="ap-south-1").controller_id
    MeetingController.objects.filter(pk=at_threshold).update(last_heartbeat_at=ago(seconds=THRESHOLD))
    MeetingController.objects.filter(pk=just_past).update(last_heartbeat_at=ago(seconds=THRESHOLD, microseconds=1))

    result = controllers_sweep_stale()

    assert result.ids("meeting_controller") == [just_past]
    assert _status(at_threshold) == HealthStatus.HEALTHY


@pytest.mark.django_db
def test_the_threshold_follows_the_setting(sweep_settings):
    sweep_settings.HEARTBEAT_STALE_THRESHOLD_SECONDS = 90
    controller_id = _controllers("us-west-2", 1, stale=1)[0]  # silent for 60 s

    assert controllers_sweep_stale().marked == []
    sweep_settings.HEARTBEAT_STALE_THRESHOLD_SECONDS = 59
    assert controllers_sweep_stale().ids("meeting_controller") == [controller_id]


@pytest.mark.django_db
def test_each_state_is_judged_by_its_own_threshold(monkeypatch):
    # The hook a startup grace for `pending` controllers will use: one threshold per state.
    monkeypatch.setattr(
        health, "stale_thresholds", lambda: {"pending": 90, "healthy": THRESHOLD, "degraded": THRESHOLD}
    )
    pending = make_controller(region="sa-east-1", health=HealthStatus.PENDING).controller_id
    healthy = make_controller(region="sa-east-1", health=HealthStatus.HEALTHY).controller_id
    MeetingController.objects.update(last_heartbeat_at=ago(seconds=60))

    result = controllers_sweep_stale()

    assert result.ids("meeting_controller") == [healthy]
    assert _status(pending) == HealthStatus.PENDING


@pytest.mark.django_db
def test_five_of_ten_stale_is_under_the_share_and_all_five_are_marked():
    ids = _controllers("us-east-1", 10, stale=5)

    result = controllers_sweep_stale()

    assert sorted(result.ids("meeting_controller")) == sorted(ids[:5])
    assert result.disrupted == []
    assert not AuditLog.objects.filter(event_type="region_disrupted").exists()


@pytest.mark.django_db
def test_six_of_ten_stale_is_a_disruption_nobody_there_is_marked(caplog):
    disrupted = _controllers("us-east-1", 10, stale=6)
    elsewhere = _controllers("eu-central-1", 10, stale=2)

    with caplog.at_level("ERROR", logger="controllers.services.health"):
        result = controllers_sweep_stale()

    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in disrupted)
    # The guard is per region: the healthy region's two stale controllers are marked in the same sweep.
    assert sorted(result.ids("meeting_controller")) == sorted(elsewhere[:2])
    assert [(row.region, row.stale, row.live) for row in result.disrupted] == [("us-east-1", 6, 10)]
    audit = AuditLog.objects.get(event_type="region_disrupted")
    assert (audit.target_type, audit.target_id, audit.result) == ("region", "us-east-1", "failure")
    assert audit.metadata["stale"] == 6 and audit.metadata["live"] == 10
    assert audit.metadata["member_type"] == "meeting_controller"
    assert not AuditLog.objects.filter(event_type="controller_unhealthy", target_id__in=disrupted).exists()
    assert not OutboxEvent.objects.filter(aggregate_id__in=disrupted).exists()
    assert "region us-east-1 disrupted: 6 of 10" in caplog.text

    # Still disrupted at the next sweep: logged again, but one audit row per DISRUPTION_AUDIT_REPEAT_SECONDS.
    caplog.clear()
    with caplog.at_level("ERROR", logger="controllers.services.health"):
        assert [row.region for row in controllers_sweep_stale().disrupted] == ["us-east-1"]
    assert "region us-east-1 disrupted" in caplog.text
    assert AuditLog.objects.filter(event_type="region_disrupted").count() == 1


@pytest.mark.django_db
def test_a_disruption_is_audited_again_once_its_last_row_is_older_than_the_repeat_interval():
    # The earlier row is written with its own time: audit rows cannot be backdated (audit_logs is append-only).
    _controllers("us-east-1", 10, stale=6)
    AuditLog.objects.create(
        event_type="region_disrupted", action="stale_sweep", actor_type="system", result="failure",
        target_type="region", target_id="us-east-1", metadata={"member_type": "meeting_controller"},
        created_at=ago(seconds=health.DISRUPTION_AUDIT_REPEAT_SECONDS + 1),
    )

    assert [row.region for row in controllers_sweep_stale().disrupted] == ["us-east-1"]

    assert AuditLog.objects.filter(event_type="region_disrupted").count() == 2


@pytest.mark.django_db
def test_draining_and_unhealthy_members_do_not_count_as_live():
    # 6 stale of 10 live is over the share; counting the draining and unhealthy ones (6 of 14) would hide it.
    _controllers("us-east-1", 2, stale=0, health_status=HealthStatus.DRAINING)
    _controllers("us-east-1", 2, stale=0, health_status=HealthStatus.UNHEALTHY)
    ids = _controllers("us-east-1", 10, stale=6)

    result = controllers_sweep_stale()

    assert result.marked == []
    assert [(row.stale, row.live) for row in result.disrupted] == [(6, 10)]
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in ids)


@pytest.mark.django_db
def test_a_region_below_the_minimum_size_is_swept_normally():
    ids = _controllers("me-south-1", 9, stale=9)

    result = controllers_sweep_stale()

    assert sorted(result.ids("meeting_controller")) == sorted(ids)
    assert result.disrupted == []


@pytest.mark.django_db
def test_media_handlers_have_their_own_guard():
    handlers = [make_handler(region="us-east-1").handler_id for _ in range(10)]
    MediaHandler.objects.filter(handler_id__in=handlers[:7]).update(last_heartbeat_at=ago(seconds=60))
    controller_ids = _controllers("us-east-1", 10, stale=1)

    result = controllers_sweep_stale()

    assert [(row.target_type, row.region, row.stale) for row in result.disrupted] == [
        ("media_handler", "us-east-1", 7)
    ]
    assert result.ids("media_handler") == []
    assert result.ids("meeting_controller") == [controller_ids[0]]


@pytest.mark.django_db
def test_dry_run_reports_and_changes_nothing():
    ids = _controllers("us-east-1", 3, stale=2)

    result = controllers_sweep_stale(dry_run=True)

    assert result.dry_run and sorted(result.ids("meeting_controller")) == sorted(ids[:2])
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in ids)
    assert not AuditLog.objects.filter(event_type="controller_unhealthy").exists()
    assert not OutboxEvent.objects.exists()


@pytest.mark.django_db
def test_the_command_and_the_task_call_the_same_sweep():
    first, second = _controllers("us-east-1", 3, stale=2)[:2]
    out = StringIO()

    call_command("sweep_stale", "--dry-run", stdout=out)
    assert f"would mark 2 meeting_controller(s) unhealthy: {first}, {second}" in out.getvalue()
    assert _status(first) == HealthStatus.HEALTHY

    assert sorted(sweep_stale.apply().get()["marked"]) == sorted([first, second])
    assert _status(first) == HealthStatus.UNHEALTHY


@pytest.mark.django_db
def test_the_dry_run_command_reports_a_sweep_gap_and_changes_nothing(settings):
    settings.STALE_SWEEP_INTERVAL_SECONDS = 5
    controllers_sweep_stale()  # the sweep's memory: it ran
    stale = _controllers("us-east-1", 3, stale=2)
    SweepState.objects.update(last_run_at=ago(seconds=16))
    out, err = StringIO(), StringIO()

    call_command("sweep_stale", "--dry-run", stdout=out, stderr=err)

    assert (
        "sweep gap: the sweep had not run for 16.0 s" in err.getvalue()
        and "nobody would be marked, every live member gets a fresh grace period; "
        "would spare 2 meeting_controller(s), 0 media_handler(s)" in err.getvalue()
    )
    assert "would mark 0 meeting_controller(s) unhealthy" in out.getvalue()
    assert SweepState.objects.get().grace_from is None  # rolled back
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in stale)

    call_command("sweep_stale", stdout=out, stderr=(err := StringIO()))
    assert "nobody was marked, every live member gets a fresh grace period; spared 2" in err.getvalue()
    assert SweepState.objects.get().grace_from is not None


@pytest.mark.django_db
def test_the_dry_run_command_reports_a_cut_off():
    east = _controllers("us-east-1", 10, stale=8)
    west = _controllers("eu-west-1", 10, stale=7)
    out, err = StringIO(), StringIO()

    call_command("sweep_stale", "--dry-run", stdout=out, stderr=err)

    lines = err.getvalue().splitlines()
    assert (
        "cut off: every region the guard can judge is disrupted at once (eu-west-1, us-east-1); "
        "nobody would be marked anywhere"
    ) in lines
    assert "region eu-west-1 disrupted: 7 of 10 live meeting_controllers stale; nobody would be marked there" in lines
    assert "would mark 0 meeting_controller(s) unhealthy" in out.getvalue()
    assert not AuditLog.objects.filter(event_type="gc_cut_off").exists()
    assert all(_status(controller_id) == HealthStatus.HEALTHY for controller_id in east + west)


def _sample(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


@pytest.mark.django_db
def test_the_sweep_task_records_its_duration_and_what_it_marked():
    stale = _controllers("us-east-1", 4, stale=2)[:2]
    handler = make_handler(region="us-east-1", health=HealthStatus.HEALTHY)
    MediaHandler.objects.filter(pk=handler.pk).update(last_heartbeat_at=ago(seconds=60))
    sweeps = _sample("darktower_sweep_duration_seconds_count")
    total = _sample("darktower_sweep_duration_seconds_sum")
    controllers = _sample("darktower_sweep_marked_total", {"target_type": "meeting_controller"})
    handlers = _sample("darktower_sweep_marked_total", {"target_type": "media_handler"})

    assert sorted(sweep_stale.apply().get()["marked"]) == sorted([*stale, handler.pk])

    assert _sample("darktower_sweep_duration_seconds_count") == sweeps + 1
    assert _sample("darktower_sweep_duration_seconds_sum") > total
    assert _sample("darktower_sweep_marked_total", {"target_type": "meeting_controller"}) == controllers + 2
    assert _sample("darktower_sweep_marked_total", {"target_type": "media_handler"}) == handlers + 1

    # A sweep that marks nobody is still timed, and counts nothing.
    assert sweep_stale.apply().get()["marked"] == []
    assert _sample("darktower_sweep_duration_seconds_count") == sweeps + 2
    assert _sample("darktower_sweep_marked_total", {"target_type": "meeting_controller"}) == controllers + 2


@pytest.mark.django_db(transaction=True)
def test_two_sweeps_at_once_mark_each_controller_once():
    ids = _controllers("us-east-1", 6, stale=4) + _controllers("eu-west-1", 3, stale=3)
    stale = set(ids[:4] + ids[6:])
    results = run_twice_at_once(controllers_sweep_stale)
    marked = [row.id for result in results for row in result.marked]
    assert sorted(marked) == sorted(stale)
    audits = Counter(AuditLog.objects.filter(event_type="controller_unhealthy").values_list("target_id", flat=True))
    assert audits == Counter(stale)
    events = OutboxEvent.objects.filter(event_type="controller_unhealthy")
    assert Counter(events.values_list("aggregate_id", flat=True)) == Counter(stale)
