"""The schema's ON DELETE rules are the database's: a raw SQL DELETE cascades or nulls exactly like the ORM."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from accounts.models import ApiKey, OAuthProvider
from audit.services import audit_record
from meetings.models import MeetingAssignment, MeetingParticipant, Recording
from tests.factories import make_controller, make_meeting, make_user
from tests.fixtures.sql import sql, sql_value


def _participant(meeting, user=None) -> MeetingParticipant:
    return MeetingParticipant.objects.create(
        meeting=meeting, participant_id=uuid.uuid4(), user=user, display_name="P"
    )


def _recording(meeting, user=None) -> Recording:
    return Recording.objects.create(
        meeting=meeting, started_by_user=user, started_at=timezone.now(), storage_path="p", storage_bucket="b"
    )


def _assignment(meeting, controller, region="us-east-1") -> MeetingAssignment:
    return MeetingAssignment.objects.create(
        meeting=meeting, meeting_controller=controller, region=region, assigned_by_gc_id="gc-1"
    )


def _count(table: str, column: str, value) -> int:
    return sql_value(f"SELECT count(*) FROM {table} WHERE {column} = %s", [value])


@pytest.mark.django_db
def test_deleting_a_user_cascades_to_credentials_and_nulls_authorship():
    user, other = make_user(), make_user()
    for owner in (user, other):
        ApiKey.objects.create(user=owner, key_hash=f"h-{owner.pk}", key_prefix="dt_", name="k", scopes=["a"])
        OAuthProvider.objects.create(user=owner, provider="github", provider_user_id=str(owner.pk))
    meeting = make_meeting(host=user)
    participant = _participant(meeting, user)
    recording = _recording(meeting, user)
    audit_record(event_type="user_login", action="login", actor_type="user", actor_user_id=user.pk)

    sql("DELETE FROM users WHERE user_id = %s", [user.pk])

    assert _count("api_keys", "user_id", user.pk) == 0
    assert _count("oauth_providers", "user_id", user.pk) == 0
    assert _count("api_keys", "user_id", other.pk) == 1  # only the deleted user's rows go
    assert _count("oauth_providers", "user_id", other.pk) == 1
    assert sql("SELECT created_by_user_id FROM meetings WHERE meeting_id = %s", [meeting.pk]) == [(None,)]
    assert sql("SELECT user_id FROM meeting_participants WHERE id = %s", [participant.pk]) == [(None,)]
    assert sql("SELECT started_by_user_id FROM recordings WHERE recording_id = %s", [recording.pk]) == [(None,)]
    assert sql("SELECT actor_user_id FROM audit_logs WHERE event_type = 'user_login'") == [(None,)]


@pytest.mark.django_db
def test_deleting_a_meeting_cascades_to_participants_recordings_and_assignments():
    controller = make_controller()
    meeting, other = make_meeting(), make_meeting()
    for target in (meeting, other):
        _participant(target)
        _recording(target)
        _assignment(target, controller)

    sql("DELETE FROM meetings WHERE meeting_id = %s", [meeting.pk])

    for table in ("meeting_participants", "recordings", "meeting_assignments"):
        assert _count(table, "meeting_id", meeting.pk) == 0, table
        assert _count(table, "meeting_id", other.pk) == 1, table
    assert _count("meeting_controllers", "controller_id", controller.pk) == 1


@pytest.mark.django_db
def test_deleting_a_controller_cascades_to_its_assignments_only():
    controller, other = make_controller(), make_controller()
    meeting = make_meeting()
    _assignment(meeting, controller, "us-east-1")
    _assignment(meeting, other, "eu-west-1")

    sql("DELETE FROM meeting_controllers WHERE controller_id = %s", [controller.pk])

    assert _count("meeting_assignments", "meeting_controller_id", controller.pk) == 0
    assert _count("meeting_assignments", "meeting_controller_id", other.pk) == 1
    assert _count("meetings", "meeting_id", meeting.pk) == 1


@pytest.mark.django_db
def test_every_foreign_key_of_the_seed_declares_its_on_delete_rule():
    rules = dict(
        sql(
            """SELECT conrelid::regclass || '.' || a.attname, confdeltype
               FROM pg_constraint JOIN pg_attribute a ON a.attrelid = conrelid AND a.attnum = conkey[1]
               WHERE contype = 'f' AND connamespace = 'public'::regnamespace"""
        )
    )

    assert {column: rules.get(column) for column in EXPECTED_RULES} == EXPECTED_RULES


CASCADE, SET_NULL = "c", "n"  # pg_constraint.confdeltype
EXPECTED_RULES = {
    "oauth_providers.user_id": CASCADE,
    "api_keys.user_id": CASCADE,
    "meetings.created_by_user_id": SET_NULL,
    "meeting_participants.meeting_id": CASCADE,
    "meeting_participants.user_id": SET_NULL,
    "recordings.meeting_id": CASCADE,
    "recordings.started_by_user_id": SET_NULL,
    "meeting_assignments.meeting_id": CASCADE,
    "meeting_assignments.meeting_controller_id": CASCADE,
    "audit_logs.actor_user_id": SET_NULL,
}
