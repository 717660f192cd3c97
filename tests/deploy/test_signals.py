"""The signals the shipped alerts read that no other metric carries: what the stale sweep decided (a region's
disruption guard, the cut-off judgement, a sweep gap), outbox rows turning poison, the heartbeat flush's outcomes
and duration, and whether the scrape could reach Redis."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
from django.db import connections
from django.db.utils import OperationalError
from django.test import Client

from audit.models import OutboxEvent
from audit.tasks import relay_outbox
from controllers.heartbeats import HeartbeatRecorder
from controllers.members import CONTROLLERS
from controllers.models import HealthStatus, MeetingController, SweepState
from controllers.services.beats import Beat
from controllers.tasks import sweep_stale
from darktower.metrics import REGISTRY
from darktower.redis import redis_client
from tests.beats import recorder_reset
from tests.factories import make_controller
from tests.fixtures.jobs import ago
from tools.devenv import ROOT


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def sweep_settings(settings):
    settings.HEARTBEAT_STALE_THRESHOLD_SECONDS = 30
    settings.PENDING_STARTUP_GRACE_SECONDS = 30
    settings.DISRUPTION_MAX_STALE_SHARE = 0.55
    settings.DISRUPTION_MIN_REGION_SIZE = 10
    settings.STALE_SWEEP_INTERVAL_SECONDS = 5


def _controllers(region: str, count: int, *, stale: int) -> list[str]:
    ids = [make_controller(region=region, health=HealthStatus.HEALTHY).controller_id for _ in range(count)]
    MeetingController.objects.filter(controller_id__in=ids[:stale]).update(last_heartbeat_at=ago(seconds=60))
    return ids


@pytest.mark.django_db
def test_a_sweep_counts_its_result_and_each_disrupted_region():
    _controllers("us-east-1", 10, stale=6)  # disrupted
    # Swept normally, and still big enough for the guard to judge after its stale one is marked: not cut off.
    _controllers("eu-west-1", 12, stale=1)
    swept = _sample("darktower_sweep_runs_total", result="swept")
    east = _sample("darktower_sweep_disrupted_regions_total", target_type="meeting_controller", region="us-east-1")
    west = _sample("darktower_sweep_disrupted_regions_total", target_type="meeting_controller", region="eu-west-1")

    sweep_stale.apply().get()
    sweep_stale.apply().get()

    assert _sample("darktower_sweep_runs_total", result="swept") == swept + 2
    assert _sample(
        "darktower_sweep_disrupted_regions_total", target_type="meeting_controller", region="us-east-1"
    ) == east + 2
    # Counters live as long as the process: compare with what earlier tests in it left.
    assert _sample(
        "darktower_sweep_disrupted_regions_total", target_type="meeting_controller", region="eu-west-1"
    ) == west


@pytest.mark.django_db
def test_a_sweep_that_judges_the_gc_cut_off_counts_as_cut_off():
    _controllers("us-east-1", 10, stale=8)
    _controllers("eu-west-1", 10, stale=7)
    cut_off, swept = _sample("darktower_sweep_runs_total", result="cut_off"), _sample(
        "darktower_sweep_runs_total", result="swept"
    )

    assert sweep_stale.apply().get()["cut_off"] is True

    assert _sample("darktower_sweep_runs_total", result="cut_off") == cut_off + 1
    assert _sample("darktower_sweep_runs_total", result="swept") == swept


@pytest.mark.django_db
def test_the_first_sweep_after_a_gap_counts_as_a_gap():
    sweep_stale.apply().get()  # the sweep's memory: it ran
    SweepState.objects.update(last_run_at=ago(seconds=16))  # more than 3 intervals of 5 s
    gaps = _sample("darktower_sweep_runs_total", result="sweep_gap")

    assert sweep_stale.apply().get()["sweep_gap_seconds"] >= 16

    assert _sample("darktower_sweep_runs_total", result="sweep_gap") == gaps + 1


@pytest.mark.django_db
def test_outbox_rows_turning_poison_are_counted(settings, monkeypatch):
    settings.OUTBOX_MAX_ATTEMPTS = 1
    controller = make_controller()
    client = redis_client()
    key = f"controller:{controller.controller_id}:capacity"
    client.set(key, "not a hash")  # the capacity hash's HSET fails: the event's own error, not an outage
    OutboxEvent.objects.create(aggregate_type="controller", aggregate_id=controller.controller_id,
                               event_type="controller_unhealthy", payload={})
    poisoned = _sample("darktower_outbox_poisoned_total")
    try:
        assert relay_outbox.apply().get()["poisoned"] == 1
    finally:
        client.delete(key)

    assert _sample("darktower_outbox_poisoned_total") == poisoned + 1


@pytest.fixture
def recorder(settings):
    settings.HEARTBEAT_FLUSH_INTERVAL_MS = 60_000  # flushed by hand below
    recorder = HeartbeatRecorder(CONTROLLERS)
    yield recorder
    recorder_reset(recorder)
    recorder.stop(timeout=5)


def _flushes(outcome: str) -> float:
    return _sample("darktower_heartbeat_flushes_total", kind="meeting_controller", outcome=outcome)


@pytest.mark.django_db
def test_a_written_flush_is_counted_and_timed(recorder):
    make_controller(controller_id="mc-signal", health=HealthStatus.HEALTHY, current_meetings=0)
    recorder.remember("mc-signal", HealthStatus.HEALTHY)
    written = _flushes("written")
    timed = _sample("darktower_heartbeat_flush_duration_seconds_count", kind="meeting_controller")

    recorder.record(Beat("mc-signal", HealthStatus.HEALTHY, {"current_meetings": 1}))
    assert recorder.flush() == 1
    assert recorder.flush() == 0  # nothing pending: no flush to count

    assert _flushes("written") == written + 1
    assert _sample("darktower_heartbeat_flush_duration_seconds_count", kind="meeting_controller") == timed + 1


@pytest.mark.django_db
def test_a_batch_the_database_refuses_is_counted_as_refused(recorder):
    make_controller(controller_id="mc-signal", health=HealthStatus.HEALTHY, current_meetings=0)
    recorder.remember("mc-signal", HealthStatus.HEALTHY)
    refused = _flushes("refused")

    # Out of the column's integer range: the statement is refused, as it would be every time.
    recorder.record(Beat("mc-signal", HealthStatus.HEALTHY, {"current_meetings": 2**40}))
    assert recorder.flush() == 0

    assert _flushes("refused") == refused + 1


@pytest.mark.django_db(transaction=True)
def test_a_flush_the_database_does_not_answer_is_counted_as_failed(recorder):
    make_controller(controller_id="mc-signal", health=HealthStatus.HEALTHY, current_meetings=0)
    recorder.remember("mc-signal", HealthStatus.HEALTHY)
    recorder.record(Beat("mc-signal", HealthStatus.HEALTHY, {"current_meetings": 1}))
    failed = _flushes("failed")
    connection_settings = connections.settings["default"]
    saved = connection_settings["NAME"]
    connections["default"].close()
    connection_settings["NAME"] = "dt_deploy_no_such_database"
    try:
        with pytest.raises(OperationalError):
            recorder.flush()
    finally:
        connections["default"].close()
        connection_settings["NAME"] = saved

    assert _flushes("failed") == failed + 1
    assert recorder.pending_count() == 1  # kept for the next flush


def _scrape(client: Client) -> set[str]:
    response = client.get("/metrics")
    assert response.status_code == 200
    return set(response.content.decode().splitlines())


@pytest.mark.django_db
def test_the_scrape_says_whether_redis_answers(settings):
    client = Client()
    assert "darktower_metrics_redis_up 1.0" in _scrape(client)

    settings.REDIS_URL = "redis://127.0.0.1:9/0"  # nobody listens there
    lines = _scrape(client)

    assert "darktower_metrics_redis_up 0.0" in lines
    assert "darktower_metrics_database_up 1.0" in lines


FRESH_SCRAPE = textwrap.dedent("""
    import django
    django.setup()
    import controllers.heartbeats
    from prometheus_client import generate_latest
    from darktower.metrics import REGISTRY
    print(generate_latest(REGISTRY).decode())
""")


def test_the_outcomes_alerts_count_exist_at_zero_before_the_first_one():
    """increase() needs a sample before the first increment: a gap's single sweep, often the first one of a
    restarted worker, must not be lost to it."""
    completed = subprocess.run(
        [sys.executable, "-c", FRESH_SCRAPE], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1"},
    )
    assert completed.returncode == 0, completed.stderr
    lines = set(completed.stdout.splitlines())

    for result in ("swept", "skipped", "sweep_gap", "cut_off"):
        assert f'darktower_sweep_runs_total{{result="{result}"}} 0.0' in lines
    for kind in ("meeting_controller", "media_handler"):
        for outcome in ("written", "failed", "refused"):
            assert f'darktower_heartbeat_flushes_total{{kind="{kind}",outcome="{outcome}"}} 0.0' in lines
    assert "darktower_outbox_poisoned_total 0.0" in lines
