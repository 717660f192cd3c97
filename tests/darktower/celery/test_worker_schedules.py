"""The schedule-driven health behaviours through a real Celery worker with its embedded beat (django-celery-beat's
DatabaseScheduler), on the real broker and this test's database:

- the drain deadline (controllers.tasks.enforce_drain_deadlines): at the deadline the drained MC's meetings are
  moved to the target or ended and the MC goes unhealthy with reason `drain-deadline`;
- the sweep-gap guard (controllers.services.health): after the worker was down for more than SWEEP_GAP_INTERVALS
  sweep intervals, its first sweep marks nobody and grants a fresh grace; only a later sweep marks the silent MC.

The MCs register and heartbeat through the services the gRPC servicer calls (database clock). Intervals are
shortened in the schedule rows the beat reads and in the worker's environment, never in production code."""

from __future__ import annotations

import time
import uuid
from dataclasses import replace
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.db import connection
from django_celery_beat.models import PeriodicTask

from audit.models import AuditLog
from controllers.models import HealthStatus, HealthTransition, MeetingController, SweepState
from controllers.services.health import SWEEP_GAP_INTERVALS
from controllers.services.operations import controller_drain
from controllers.services.registration import controller_register
from darktower.schedules import schedules_apply, schedules_table
from meetings.models import Meeting, MeetingAssignment
from meetings.services.assignment import meeting_assign
from tests.beats import controller_heartbeat
from tests.factories import make_meeting
from tests.faults.processes import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Beat tick alignment, a task's round trip through the broker, a loaded 2-core machine.
SLACK_SECONDS = 8
DRAIN_JOB = "controllers.enforce_drain_deadlines"
DRAIN_EVERY_SECONDS = 1
DRAIN_DEADLINE_SECONDS = 2
SWEEP_INTERVAL_SECONDS = 1
THRESHOLD_SECONDS = 2
GAP_LIMIT_SECONDS = SWEEP_GAP_INTERVALS * SWEEP_INTERVAL_SECONDS
STOP_TIMEOUT_SECONDS = 15


def _register(controller_id: str, *, region: str, max_meetings: int) -> None:
    controller_register(
        controller_id=controller_id, region=region, grpc_endpoint=f"grpc://{controller_id}.internal:50052",
        webtransport_endpoint=None, max_meetings=max_meetings, max_participants=1000,
    )


def _beat(controller_id: str, *, meetings: int = 0) -> None:
    outcome = controller_heartbeat(
        controller_id=controller_id, reported=HealthStatus.HEALTHY, current_meetings=meetings
    )
    assert outcome.to_status == HealthStatus.HEALTHY, outcome


def _status(controller_id: str) -> str:
    return MeetingController.objects.values_list("health_status", flat=True).get(pk=controller_id)


def _reasons(controller_id: str) -> list[tuple[str, str | None, str]]:
    return list(
        HealthTransition.objects.filter(component_type="controller", component_id=controller_id)
        .order_by("id").values_list("reason", "from_status", "to_status")
    )


def _seconds_since_last_sweep() -> float:
    with connection.cursor() as cursor:
        cursor.execute("SELECT extract(epoch FROM now() - last_run_at) FROM controller_sweep_state WHERE id = 1")
        row = cursor.fetchone()
    return float(row[0]) if row else 0.0


def test_the_worker_enforces_a_drain_deadline_moving_and_ending_the_meetings(start_worker, operator):
    call_command("setup_schedules")
    # The beat reads the job's interval from its PeriodicTask row: every second instead of every 30.
    [drain_job] = [entry for entry in schedules_table() if entry.name == DRAIN_JOB]
    schedules_apply([replace(drain_job, every_seconds=DRAIN_EVERY_SECONDS, expire_seconds=DRAIN_EVERY_SECONDS)])
    assert PeriodicTask.objects.get(name=DRAIN_JOB).interval.every == DRAIN_EVERY_SECONDS

    region = f"drain-{uuid.uuid4().hex[:6]}"
    drained, target = f"mc-drained-{uuid.uuid4().hex[:8]}", f"mc-target-{uuid.uuid4().hex[:8]}"
    _register(drained, region=region, max_meetings=10)
    _beat(drained)
    first, second = (make_meeting() for _ in range(2))
    for meeting in (first, second):
        assert meeting_assign(meeting_id=meeting.pk, region=region).controller_id == drained
    _register(target, region=region, max_meetings=1)  # room for one of the two meetings
    worker = start_worker(HEARTBEAT_STALE_THRESHOLD_SECONDS="30")
    _beat(drained, meetings=2)
    _beat(target)

    started = controller_drain(
        controller_id=drained, actor_user_id=operator.pk, deadline_seconds=DRAIN_DEADLINE_SECONDS,
        target_controller_id=target,
    )
    assert started.active_assignments == 2 and _status(drained) == HealthStatus.DRAINING

    wait_for(
        lambda: _status(drained) == HealthStatus.UNHEALTHY,
        timeout=DRAIN_DEADLINE_SECONDS + DRAIN_EVERY_SECONDS + SLACK_SECONDS,
        what=f"the worker to enforce the drain deadline of {drained}", log=worker.log,
    )

    assert _reasons(drained)[-2:] == [("operator", "healthy", "draining"), ("drain-deadline", "draining", "unhealthy")]
    deadline = HealthTransition.objects.get(component_id=drained, reason="drain-deadline")
    assert deadline.created_at >= started.drain_deadline, "enforced before the deadline"
    assert deadline.actor_type == "system"
    assert (deadline.metadata["moved"], deadline.metadata["ended"]) == (1, 1)
    assert deadline.metadata["target_controller_id"] == target

    # The older assignment moved to the target (which had room for one), the other ended; each recorded.
    moved_from, ended = MeetingAssignment.objects.filter(meeting_controller_id=drained).order_by("assigned_at", "id")
    assert (moved_from.meeting_id, moved_from.end_reason) == (first.pk, "drain_move")
    assert (ended.meeting_id, ended.end_reason) == (second.pk, "drain_deadline")
    moved_to = MeetingAssignment.objects.get(meeting=first, ended_at__isnull=True)
    assert moved_to.meeting_controller_id == target
    assert not MeetingAssignment.objects.filter(meeting=second, ended_at__isnull=True).exists()
    pointers = dict(Meeting.objects.filter(pk__in=[first.pk, second.pk]).values_list("pk", "assigned_controller_id"))
    assert pointers == {first.pk: target, second.pk: None}  # the next join of the second one reassigns it

    row = MeetingController.objects.get(pk=drained)
    assert (row.drain_deadline, row.current_meetings + row.assigned_since_heartbeat) == (None, 0)
    target_row = MeetingController.objects.get(pk=target)
    assert (target_row.health_status, target_row.assigned_since_heartbeat) == (HealthStatus.HEALTHY, 1)
    audit = AuditLog.objects.get(event_type="controller_drain_deadline", target_id=drained)
    assert audit.metadata | {"drain_deadline": None} == {
        "drain_deadline": None, "target_controller_id": target, "moved": 1, "ended": 1,
        "left_for_concurrent_join": 0, "marked_unhealthy": True,
    }
    assert AuditLog.objects.filter(event_type="meeting_assigned", action="drain_move", target_id=str(first.pk)).exists()
    assert f"drain deadline of {drained}: 1 moved to {target}, 1 ended, marked unhealthy" in worker.log.read_text()


def test_after_a_worker_outage_the_first_sweep_marks_nobody_and_a_later_one_marks_the_silent_mc(
    start_worker, settings
):
    settings.STALE_SWEEP_INTERVAL_SECONDS = SWEEP_INTERVAL_SECONDS
    call_command("setup_schedules")  # the sweep every second
    environment = {
        "STALE_SWEEP_INTERVAL_SECONDS": str(SWEEP_INTERVAL_SECONDS),
        "HEARTBEAT_STALE_THRESHOLD_SECONDS": str(THRESHOLD_SECONDS),
    }
    controller_id = f"mc-gap-{uuid.uuid4().hex[:8]}"
    first = start_worker(**environment)
    _register(controller_id, region=f"gap-{uuid.uuid4().hex[:6]}", max_meetings=10)
    _beat(controller_id)
    heartbeat_at = MeetingController.objects.get(pk=controller_id).last_heartbeat_at
    wait_for(
        lambda: SweepState.objects.filter(last_run_at__gt=heartbeat_at).exists(),
        timeout=SWEEP_INTERVAL_SECONDS + SLACK_SECONDS, what="the first worker to sweep", log=first.log,
    )

    # The GC's worker goes down; the MC keeps beating until the worker is gone, then falls silent too.
    first.request_stop()
    stop_by = time.monotonic() + STOP_TIMEOUT_SECONDS
    while first.running() and time.monotonic() < stop_by:
        _beat(controller_id)
        time.sleep(THRESHOLD_SECONDS / 4)
    first.stop()
    _beat(controller_id)
    last_sweep = SweepState.objects.get()
    assert _status(controller_id) == HealthStatus.HEALTHY

    # Longer than the gap limit without a sweep, and the MC stale by then: a plain sweep would mark it.
    wait_for(
        lambda: _seconds_since_last_sweep() > max(GAP_LIMIT_SECONDS, THRESHOLD_SECONDS) + 0.5,
        timeout=GAP_LIMIT_SECONDS + SLACK_SECONDS, what="a sweep gap",
    )
    second = start_worker(**environment)
    wait_for(
        lambda: _status(controller_id) == HealthStatus.UNHEALTHY,
        timeout=THRESHOLD_SECONDS + 2 * SWEEP_INTERVAL_SECONDS + SLACK_SECONDS,
        what=f"a later sweep to mark {controller_id}", log=second.log,
    )

    assert _reasons(controller_id) == [
        ("registered", None, "pending"), ("heartbeat", "pending", "healthy"),
        ("sweep-gap", "healthy", "healthy"), ("stale", "healthy", "unhealthy"),
    ]
    spared = HealthTransition.objects.get(component_id=controller_id, reason="sweep-gap")
    stale = HealthTransition.objects.get(component_id=controller_id, reason="stale")
    # One gap sweep, the second worker's first: the gap it measured starts at the first worker's last sweep.
    gap = AuditLog.objects.get(event_type="stale_sweep_gap")
    assert gap.metadata["last_run_at"] == last_sweep.last_run_at.isoformat()
    assert gap.metadata["gap_seconds"] == spared.metadata["gap_seconds"] > GAP_LIMIT_SECONDS
    assert gap.metadata["spared"] == {"meeting_controller": 1, "media_handler": 0}
    assert "stale sweep had not run for" in second.log.read_text()
    # Marked only once the fresh grace that sweep granted had passed without a heartbeat.
    grace_from = SweepState.objects.get().grace_from
    assert grace_from > last_sweep.last_run_at
    assert stale.created_at - grace_from >= timedelta(seconds=THRESHOLD_SECONDS)
