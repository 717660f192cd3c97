"""Two runs at once of the jobs that the sweep and relay tests do not cover (two beats by mistake, a retried task,
an operator's command beside the beat): assignment cleanup, retention, audit partition creation and drop. Each
run has its own database connection; every effect happens once and neither run fails."""

from __future__ import annotations

import uuid
from collections import Counter
from datetime import UTC, date, datetime, timedelta

import pytest
from django.db import connection
from django.db.models.functions import Now

from accounts.models import ApiKey
from audit.models import AuditLog, IdempotencyKey, OutboxEvent
from audit.partitions import audit_partitions_drop_older_than, audit_partitions_ensure
from controllers.models import HealthStatus
from darktower.retention import retention_run
from meetings.models import Meeting, MeetingAssignment, Recording
from meetings.services.retention import assignments_end_unhealthy
from tests.factories import make_controller, make_meeting, make_user
from tests.fixtures.jobs import run_twice_at_once

pytestmark = pytest.mark.django_db(transaction=True)

DAY = timedelta(days=1)


def test_two_assignment_cleanups_end_each_assignment_once():
    dead = [make_controller(health=HealthStatus.UNHEALTHY) for _ in range(3)]
    alive = make_controller(health=HealthStatus.HEALTHY)

    def assign(controller) -> MeetingAssignment:
        return MeetingAssignment.objects.create(
            meeting=make_meeting(status="active"), meeting_controller=controller, region=controller.region,
            assigned_by_gc_id="gc-test", assigned_at=Now() - timedelta(minutes=5),
        )

    on_dead = [assign(controller) for controller in dead for _ in range(10)]
    on_alive = assign(alive)

    results = run_twice_at_once(assignments_end_unhealthy)

    ended = Counter(row.assignment_id for result in results for row in result)
    assert ended == Counter(assignment.pk for assignment in on_dead)
    assert MeetingAssignment.objects.filter(pk__in=ended, ended_at__isnull=True).count() == 0
    assert MeetingAssignment.objects.get(pk=on_alive.pk).ended_at is None
    audits = Counter(AuditLog.objects.filter(event_type="meeting_assignment_ended").values_list("target_id", flat=True))
    assert audits == Counter(str(assignment.meeting_id) for assignment in on_dead)


def test_two_retention_runs_delete_each_row_once(settings):
    settings.RETENTION_MEETINGS_DAYS = 90
    settings.RETENTION_RECORDINGS_DAYS = 365
    settings.RETENTION_EXPIRED_API_KEYS_DAYS = 30
    settings.RETENTION_OUTBOX_DAYS = 30
    settings.RETENTION_ENDED_ASSIGNMENTS_DAYS = 7
    long_ago = Now() - 400 * DAY

    old_meetings = [make_meeting(status="ended", ended_at=Now()) for _ in range(6)]
    Meeting.objects.filter(pk__in=[m.pk for m in old_meetings]).update(created_at=long_ago, ended_at=Now() - 91 * DAY)
    running = make_meeting(status="active")
    recordings = [
        Recording.objects.create(meeting=running, started_at=Now(), storage_path=f"rec/{n}", storage_bucket="b")
        for n in range(4)
    ]
    Recording.objects.filter(pk__in=[r.pk for r in recordings]).update(created_at=Now() - 366 * DAY)
    controller = make_controller(health=HealthStatus.HEALTHY)
    for _ in range(5):
        MeetingAssignment.objects.create(
            meeting=make_meeting(status="active"), meeting_controller=controller, region=controller.region,
            assigned_by_gc_id="gc-test", assigned_at=Now() - 30 * DAY, ended_at=Now() - 8 * DAY,
        )
    user = make_user()
    for _ in range(3):
        ApiKey.objects.create(user=user, key_hash=uuid.uuid4().hex, key_prefix="dt_x", name="k",
                              scopes=["meetings:read"], expires_at=Now() - 31 * DAY)
    for _ in range(4):
        IdempotencyKey.objects.create(key=str(uuid.uuid4()), principal="ip:127.0.0.1", request_method="POST",
                                      request_path="/x", request_hash="0" * 64, expires_at=Now() - DAY)
    for _ in range(5):
        OutboxEvent.objects.create(aggregate_type="meeting", aggregate_id="m", event_type="e",
                                   processed_at=Now() - 31 * DAY)
    kept_event = OutboxEvent.objects.create(aggregate_type="meeting", aggregate_id="m", event_type="e")

    results = run_twice_at_once(retention_run)

    totals: Counter[str] = Counter()
    for result in results:
        totals.update({row.name: row.count for row in result})
    assert totals == Counter({
        "meetings": 6, "recordings": 4, "ended_assignments": 5, "expired_api_keys": 3, "idempotency_keys": 4,
        "processed_outbox_events": 5,
    })
    assert not Meeting.objects.filter(status="ended").exists()
    assert not Recording.objects.exists() and Meeting.objects.filter(pk=running.pk).exists()
    assert not MeetingAssignment.objects.exists()
    assert not ApiKey.objects.exists() and not IdempotencyKey.objects.exists()
    assert list(OutboxEvent.objects.values_list("pk", flat=True)) == [kept_event.pk]


def _month(months_back: int) -> date:
    today = datetime.now(UTC).date()
    index = today.year * 12 + today.month - 1 - months_back
    return date(index // 12, index % 12 + 1, 1)


def _partition(month: date) -> str:
    return f"audit_logs_y{month:%Y}m{month:%m}"


def _exists(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [table])
        return cursor.fetchone()[0]


def test_two_partition_creators_create_each_partition_once_and_two_droppers_drop_each_once():
    # Months far enough back (past retention) that the droppers below remove them again: nothing outlives the test.
    start = _month(40)
    expected = [_partition(_month(months_back)) for months_back in (40, 39, 38)]
    try:
        created = run_twice_at_once(lambda: audit_partitions_ensure(months_ahead=2, start_month=start))

        assert Counter(name for names in created for name in names) == Counter(expected)
        assert all(_exists(name) for name in expected)

        dropped = run_twice_at_once(lambda: audit_partitions_drop_older_than(months=12))

        counts = Counter(name for names in dropped for name in names)
        assert [counts[name] for name in expected] == [1, 1, 1]
        assert set(counts.values()) == {1}
        assert not any(_exists(name) for name in expected)
        assert _exists("audit_logs_default")
    finally:
        audit_partitions_drop_older_than(months=12)
