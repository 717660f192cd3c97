"""The heartbeat coalescer (controllers.heartbeats) on the real database."""

from __future__ import annotations

import logging
import time
from datetime import timedelta

import pytest
from django.db import DatabaseError, connections
from django.utils import timezone

from audit.models import AuditLog
from controllers.heartbeats import HeartbeatRecorder
from controllers.members import CONTROLLERS
from controllers.models import HealthStatus, MeetingController
from controllers.services.beats import Beat
from darktower.errors import NotFound
from tests.factories import make_controller


@pytest.fixture
def recorder():
    recorder = HeartbeatRecorder(CONTROLLERS)
    yield recorder
    recorder.stop(timeout=5)


def beat(controller_id="mc-1", reported=HealthStatus.HEALTHY, **values):
    return Beat(controller_id, reported, values)


def wait_for(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


@pytest.mark.django_db
def test_beats_that_change_nothing_are_coalesced_keeping_the_latest_values(recorder, settings):
    settings.HEARTBEAT_FLUSH_INTERVAL_MS = 5000  # flushed by hand below
    make_controller(controller_id="mc-1", health=HealthStatus.HEALTHY, current_meetings=0)
    recorder.remember("mc-1", HealthStatus.HEALTHY)

    recorder.record(beat(current_meetings=1, cpu_usage_percent=50.0, memory_usage_percent=60.0))
    recorder.record(beat(current_meetings=2, cpu_usage_percent=None))  # a fast beat after a comprehensive one

    assert MeetingController.objects.get(pk="mc-1").current_meetings == 0
    assert recorder.pending_count() == 1
    assert recorder.flush() == 1
    controller = MeetingController.objects.get(pk="mc-1")
    assert (controller.current_meetings, controller.cpu_usage_percent, controller.memory_usage_percent) == (
        2, 50.0, 60.0,
    )
    assert not AuditLog.objects.filter(target_type="meeting_controller").exists()


@pytest.mark.django_db
def test_a_beat_that_changes_health_is_written_at_once_with_the_pending_values(recorder, settings):
    settings.HEARTBEAT_FLUSH_INTERVAL_MS = 5000
    make_controller(controller_id="mc-1", health=HealthStatus.HEALTHY)
    recorder.remember("mc-1", HealthStatus.HEALTHY)
    recorder.record(beat(current_meetings=4, cpu_usage_percent=10.0))

    recorder.record(beat(reported=HealthStatus.DEGRADED, current_meetings=5))

    controller = MeetingController.objects.get(pk="mc-1")
    assert (controller.health_status, controller.current_meetings, controller.cpu_usage_percent) == (
        "degraded", 5, 10.0,
    )
    assert recorder.pending_count() == 0
    assert AuditLog.objects.get(target_id="mc-1").event_type == "controller_degraded"


@pytest.mark.django_db
def test_a_member_the_sweep_marked_meanwhile_goes_through_the_recovery_gate_at_the_flush(recorder, settings):
    # No silence rule: however long this process has not seen a member, a beat that changes nothing it knows of is
    # coalesced (a slower server must not write more per call); the flush judges it by the database's state.
    # The recorder keeps no clock: the long silence is the database's, an hour past the stale threshold.
    settings.HEARTBEAT_FLUSH_INTERVAL_MS = 5000
    settings.HEARTBEAT_STALE_THRESHOLD_SECONDS = 1
    make_controller(controller_id="mc-1", health=HealthStatus.HEALTHY)
    recorder.remember("mc-1", HealthStatus.HEALTHY)
    MeetingController.objects.filter(pk="mc-1").update(  # the sweep, unknown to us
        health_status="unhealthy", last_heartbeat_at=timezone.now() - timedelta(hours=1),
    )

    recorder.record(beat(current_meetings=1))
    assert recorder.pending_count() == 1
    assert recorder.flush() == 1

    row = MeetingController.objects.get(pk="mc-1")
    # The recovery gate held it (hold-down), and this process now knows the state the database has.
    assert (row.health_status, row.current_meetings, row.good_heartbeats) == ("unhealthy", 1, 1)
    recorder.record(beat(current_meetings=2))
    assert recorder.pending_count() == 0  # an unhealthy member's beats are written at once
    assert MeetingController.objects.get(pk="mc-1").good_heartbeats == 2


@pytest.mark.django_db
def test_unknown_ids_are_not_found_and_known_ones_are_learnt_from_the_database(recorder):
    with pytest.raises(NotFound):
        recorder.record(beat("mc-nobody"))
    make_controller(controller_id="mc-new", health=HealthStatus.PENDING)

    recorder.record(beat("mc-new"))

    assert MeetingController.objects.get(pk="mc-new").health_status == "healthy"


@pytest.mark.django_db(transaction=True)
def test_the_flush_thread_survives_a_database_outage_and_keeps_the_latest_values(recorder, settings, caplog):
    settings.HEARTBEAT_FLUSH_INTERVAL_MS = 20
    caplog.set_level(logging.WARNING, logger="controllers.heartbeats")
    make_controller(controller_id="mc-1", health=HealthStatus.HEALTHY, current_meetings=0)
    recorder.remember("mc-1", HealthStatus.HEALTHY)
    db_settings = connections.settings["default"]
    saved = db_settings["NAME"]
    # What the flush thread leaves pending after each failed attempt (read in that thread, after the failure): its
    # first connection is refused, whether at loading the members or at the flush.
    pending_after_failures = []

    def watched(step):
        def attempt():
            try:
                return step()
            except DatabaseError:
                pending_after_failures.append(recorder.pending_count())
                raise
        return attempt

    recorder._load, recorder.flush = watched(recorder._load), watched(recorder.flush)
    db_settings["NAME"] = "dt_grpc_no_such_database"
    try:
        recorder.record(beat(current_meetings=3))
        assert wait_for(lambda: "heartbeat flush failed" in caplog.text)
        recorder.record(beat(current_meetings=4))
        failed_before = len(pending_after_failures)
        assert wait_for(lambda: len(pending_after_failures) > failed_before)  # a failed flush after the beat
        assert pending_after_failures[failed_before:] == [1] * (len(pending_after_failures) - failed_before)
    finally:
        db_settings["NAME"] = saved

    assert wait_for(lambda: MeetingController.objects.get(pk="mc-1").current_meetings == 4)
    assert recorder.pending_count() == 0
    assert wait_for(lambda: "heartbeat flush recovered" in caplog.text)
