"""Retention: each period deletes one second past it and keeps one second inside it; batches; counts.

At exactly the period a row is kept, for every table: "older than N days" is strict (`<`), as the sweep's
threshold is, so a row exactly N days old goes one run later. Idempotency keys follow the same rule at
expires_at = now(); the middleware already treats such a key as expired (`expires_at <= now()`) and takes it
over on reuse, so keeping it until the next run changes nothing. The boundary tests also delete a row one
microsecond past the period, which pins the comparison down to the database's resolution."""

from __future__ import annotations

import uuid
from io import StringIO

import pytest
from django.core.management import call_command

from accounts.models import ApiKey
from accounts.services.retention import api_keys_prune_expired
from audit.models import IdempotencyKey, OutboxEvent
from audit.retention import idempotency_keys_prune_expired, outbox_events_prune_processed
from controllers.models import HealthStatus
from darktower.retention import retention_run
from darktower.tasks import run_retention
from meetings.models import Meeting, MeetingAssignment, MeetingParticipant, Recording
from meetings.services.retention import assignments_prune_ended, meetings_prune_ended, recordings_prune
from tests.factories import make_controller, make_meeting, make_user
from tests.fixtures.jobs import TransactionNow, ago, ahead

pytestmark = pytest.mark.django_db

DAY = 86400


@pytest.fixture(autouse=True)
def retention_settings(settings):
    settings.RETENTION_MEETINGS_DAYS = 90
    settings.RETENTION_RECORDINGS_DAYS = 365
    settings.RETENTION_EXPIRED_API_KEYS_DAYS = 30
    settings.RETENTION_OUTBOX_DAYS = 30
    settings.RETENTION_ENDED_ASSIGNMENTS_DAYS = 7


def _ended_meeting(*, seconds_ago: float) -> Meeting:
    meeting = make_meeting(status="ended", ended_at=TransactionNow())
    Meeting.objects.filter(pk=meeting.pk).update(ended_at=ago(seconds=seconds_ago), created_at=ago(days=400))
    return meeting


def _recording(meeting: Meeting, *, seconds_ago: float) -> Recording:
    recording = Recording.objects.create(
        meeting=meeting, started_at=TransactionNow(), storage_path=f"rec/{uuid.uuid4()}", storage_bucket="b"
    )
    Recording.objects.filter(pk=recording.pk).update(created_at=ago(seconds=seconds_ago))
    return recording


def _exists(model, pk) -> bool:
    return model.objects.filter(pk=pk).exists()


def test_meetings_ended_past_the_period_go_with_their_participants_and_assignments():
    old = _ended_meeting(seconds_ago=90 * DAY + 1)
    recent = _ended_meeting(seconds_ago=90 * DAY - 1)
    running = make_meeting(status="active")
    Meeting.objects.filter(pk=running.pk).update(created_at=ago(days=400))
    participant = MeetingParticipant.objects.create(meeting=old, participant_id=uuid.uuid4(), display_name="P")
    controller = make_controller(health=HealthStatus.HEALTHY)
    assignment = MeetingAssignment.objects.create(
        meeting=old, meeting_controller=controller, region=controller.region, assigned_by_gc_id="gc",
        assigned_at=ago(days=100), ended_at=ago(days=91),
    )

    assert meetings_prune_ended() == 1

    assert not _exists(Meeting, old.pk)
    assert not _exists(MeetingParticipant, participant.pk)
    assert not _exists(MeetingAssignment, assignment.pk)
    assert _exists(Meeting, recent.pk) and _exists(Meeting, running.pk)


def test_a_meeting_with_recordings_waits_for_the_recordings_period():
    meeting = _ended_meeting(seconds_ago=200 * DAY)
    recording = _recording(meeting, seconds_ago=200 * DAY)

    assert meetings_prune_ended() == 0
    assert _exists(Recording, recording.pk)

    Recording.objects.filter(pk=recording.pk).update(created_at=ago(seconds=365 * DAY + 1))
    counts = {row.name: row.count for row in retention_run()}

    assert counts["recordings"] == 1 and counts["meetings"] == 1
    assert not _exists(Meeting, meeting.pk)


def test_recordings_boundary():
    meeting = make_meeting(status="active")
    old = _recording(meeting, seconds_ago=365 * DAY + 1)
    inside = _recording(meeting, seconds_ago=365 * DAY - 1)

    assert recordings_prune() == 1
    assert not _exists(Recording, old.pk) and _exists(Recording, inside.pk)


def test_api_keys_expired_past_the_grace_period_only():
    user = make_user()

    def key(expires_at) -> ApiKey:
        return ApiKey.objects.create(
            user=user, key_hash=uuid.uuid4().hex, key_prefix="dt_x", name="k", scopes=["meetings:read"],
            expires_at=expires_at,
        )

    old, inside, never = key(ago(seconds=30 * DAY + 1)), key(ago(seconds=30 * DAY - 1)), key(None)

    assert api_keys_prune_expired() == 1
    assert not _exists(ApiKey, old.pk)
    assert _exists(ApiKey, inside.pk) and _exists(ApiKey, never.pk)


def test_idempotency_keys_past_expires_at():
    def key(expires_at) -> IdempotencyKey:
        return IdempotencyKey.objects.create(
            key=str(uuid.uuid4()), principal="ip:127.0.0.1", request_method="POST", request_path="/x",
            request_hash="0" * 64, expires_at=expires_at,
        )

    expired, live = key(ago(seconds=1)), key(ahead(seconds=1))

    assert idempotency_keys_prune_expired() == 1
    assert not _exists(IdempotencyKey, expired.pk) and _exists(IdempotencyKey, live.pk)


def test_processed_outbox_rows_past_the_period_but_never_pending_or_poison_ones():
    def event(**fields) -> OutboxEvent:
        return OutboxEvent.objects.create(aggregate_type="meeting", aggregate_id="m", event_type="e", **fields)

    old = event(processed_at=ago(seconds=30 * DAY + 1))
    inside = event(processed_at=ago(seconds=30 * DAY - 1))
    pending = event()
    poison = event(failed_at=ago(days=100), attempts=10)
    OutboxEvent.objects.update(created_at=ago(days=100))

    assert outbox_events_prune_processed() == 1
    assert not _exists(OutboxEvent, old.pk)
    assert all(_exists(OutboxEvent, row.pk) for row in (inside, pending, poison))


def test_ended_assignments_past_the_period():
    controller = make_controller(health=HealthStatus.HEALTHY)

    def assignment(ended_at) -> MeetingAssignment:
        return MeetingAssignment.objects.create(
            meeting=make_meeting(), meeting_controller=controller, region=controller.region,
            assigned_by_gc_id="gc", assigned_at=ago(days=30), ended_at=ended_at,
        )

    old, inside, active = assignment(ago(seconds=7 * DAY + 1)), assignment(ago(seconds=7 * DAY - 1)), assignment(None)

    assert assignments_prune_ended() == 1
    assert not _exists(MeetingAssignment, old.pk)
    assert _exists(MeetingAssignment, inside.pk) and _exists(MeetingAssignment, active.pk)


def test_a_backlog_is_deleted_in_batches_until_none_is_left():
    meetings = [_ended_meeting(seconds_ago=100 * DAY) for _ in range(5)]

    assert meetings_prune_ended(batch_size=2) == 5
    assert not Meeting.objects.filter(pk__in=[m.pk for m in meetings]).exists()


def test_dry_run_counts_what_a_run_deletes_and_deletes_nothing():
    _ended_meeting(seconds_ago=100 * DAY)
    _ended_meeting(seconds_ago=100 * DAY)
    OutboxEvent.objects.create(
        aggregate_type="meeting", aggregate_id="m", event_type="e", processed_at=ago(days=31)
    )
    out = StringIO()

    call_command("prune", "--dry-run", stdout=out)

    lines = out.getvalue().splitlines()
    assert "meetings: would delete 2" in lines
    assert "processed_outbox_events: would delete 1" in lines
    assert "audit_partitions: would delete 0" in lines
    assert Meeting.objects.count() == 2 and OutboxEvent.objects.count() == 1

    assert run_retention.apply().get() == {
        "recordings": 0, "meetings": 2, "ended_assignments": 0, "expired_api_keys": 0, "idempotency_keys": 0,
        "processed_outbox_events": 1, "health_transitions": 0,
    }
    assert Meeting.objects.count() == 0


def test_periods_follow_the_settings(settings):
    meeting = _ended_meeting(seconds_ago=10 * DAY)
    settings.RETENTION_MEETINGS_DAYS = 11
    assert meetings_prune_ended() == 0
    settings.RETENTION_MEETINGS_DAYS = 9
    assert meetings_prune_ended() == 1
    assert not _exists(Meeting, meeting.pk)


# --- exactly at the period: kept; one microsecond past it: deleted ------------------------------------------
# Inside the test's transaction now() does not move, so ago(days=N) is exactly the bound the job computes.


def test_a_meeting_ended_exactly_90_days_ago_is_kept():
    at_bound = _ended_meeting(seconds_ago=0)
    past = _ended_meeting(seconds_ago=0)
    Meeting.objects.filter(pk=at_bound.pk).update(ended_at=ago(days=90))
    Meeting.objects.filter(pk=past.pk).update(ended_at=ago(days=90, microseconds=1))

    assert meetings_prune_ended() == 1
    assert _exists(Meeting, at_bound.pk) and not _exists(Meeting, past.pk)


def test_a_recording_exactly_a_year_old_is_kept():
    meeting = make_meeting(status="active")
    at_bound, past = _recording(meeting, seconds_ago=0), _recording(meeting, seconds_ago=0)
    Recording.objects.filter(pk=at_bound.pk).update(created_at=ago(days=365))
    Recording.objects.filter(pk=past.pk).update(created_at=ago(days=365, microseconds=1))

    assert recordings_prune() == 1
    assert _exists(Recording, at_bound.pk) and not _exists(Recording, past.pk)


def test_an_api_key_exactly_30_days_past_expiry_is_kept():
    user = make_user()
    at_bound, past = (
        ApiKey.objects.create(
            user=user, key_hash=uuid.uuid4().hex, key_prefix="dt_x", name="k", scopes=["meetings:read"],
            expires_at=expires_at,
        )
        for expires_at in (ago(days=30), ago(days=30, microseconds=1))
    )

    assert api_keys_prune_expired() == 1
    assert _exists(ApiKey, at_bound.pk) and not _exists(ApiKey, past.pk)


def test_a_processed_outbox_row_exactly_30_days_old_is_kept():
    at_bound, past = (
        OutboxEvent.objects.create(aggregate_type="meeting", aggregate_id="m", event_type="e", processed_at=when)
        for when in (ago(days=30), ago(days=30, microseconds=1))
    )

    assert outbox_events_prune_processed() == 1
    assert _exists(OutboxEvent, at_bound.pk) and not _exists(OutboxEvent, past.pk)


def test_an_assignment_ended_exactly_7_days_ago_is_kept():
    controller = make_controller(health=HealthStatus.HEALTHY)
    at_bound, past = (
        MeetingAssignment.objects.create(
            meeting=make_meeting(), meeting_controller=controller, region=controller.region,
            assigned_by_gc_id="gc", assigned_at=ago(days=30), ended_at=ended_at,
        )
        for ended_at in (ago(days=7), ago(days=7, microseconds=1))
    )

    assert assignments_prune_ended() == 1
    assert _exists(MeetingAssignment, at_bound.pk) and not _exists(MeetingAssignment, past.pk)


def test_an_idempotency_key_expiring_exactly_now_is_kept():
    at_bound, past = (
        IdempotencyKey.objects.create(
            key=str(uuid.uuid4()), principal="ip:127.0.0.1", request_method="POST", request_path="/x",
            request_hash="0" * 64, expires_at=expires_at,
        )
        for expires_at in (TransactionNow(), ago(microseconds=1))
    )

    assert idempotency_keys_prune_expired() == 1
    assert _exists(IdempotencyKey, at_bound.pk) and not _exists(IdempotencyKey, past.pk)
