"""Participants: list (host and participants), leave with duration, kick (host only)."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditLog
from meetings.models import MeetingParticipant
from tests.factories import make_meeting
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db


def participant(meeting, user=None, *, seconds_ago=0, **extra):
    return MeetingParticipant.objects.create(
        meeting=meeting, participant_id=uuid.uuid4(), user=user, display_name=extra.pop("display_name", "P"),
        joined_at=timezone.now() - timedelta(seconds=seconds_ago), **extra,
    )


def leave_url(meeting, p):
    return f"/api/v1/meetings/{meeting.pk}/participants/{p.participant_id}/leave"


def test_list_active_and_past_in_join_order(as_user, host, django_assert_num_queries):
    meeting = make_meeting(host=host)
    first = participant(meeting, host, seconds_ago=30, role="host")
    second = participant(meeting, seconds_ago=20, role="guest", left_at=timezone.now(), leave_reason="voluntary")
    third = participant(meeting, seconds_ago=10)
    client = as_user(host)
    with django_assert_num_queries(4):  # user, meeting, count, page
        body = client.get(f"/api/v1/meetings/{meeting.pk}/participants").json()
    assert [p["participant_id"] for p in body["results"]] == [
        str(first.participant_id), str(second.participant_id), str(third.participant_id)
    ]
    assert body["results"][1]["left_at"] and body["results"][1]["leave_reason"] == "voluntary"
    assert body["results"][0]["role"] == "host"


def test_list_unknown_meeting_is_404(as_user, host):
    assert_error(as_user(host).get(f"/api/v1/meetings/{uuid.uuid4()}/participants"), 404, "not_found")


def test_leave_records_duration_and_reason(as_user, host, other):
    meeting = make_meeting(host=host)
    mine = participant(meeting, other, seconds_ago=125)
    response = as_user(other).post(leave_url(meeting, mine), {"leave_reason": "connection_lost"}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["leave_reason"] == "connection_lost" and body["left_at"]
    assert 124 <= body["total_duration_seconds"] <= 140
    assert AuditLog.objects.filter(event_type="participant_left", actor_user_id=other.pk).count() == 1
    # Leaving twice: conflict.
    assert_error(as_user(other).post(leave_url(meeting, mine), format="json"), 409, "conflict")


def test_leave_defaults_to_voluntary(as_user, host):
    meeting = make_meeting(host=host)
    mine = participant(meeting, host)
    assert as_user(host).post(leave_url(meeting, mine), format="json").json()["leave_reason"] == "voluntary"


def test_only_the_host_kicks(as_user, host, other):
    meeting = make_meeting(host=host)
    guest = participant(meeting, role="guest")
    mine = participant(meeting, other)
    assert_error(as_user(other).post(leave_url(meeting, guest), {"leave_reason": "voluntary"}, format="json"),
                 403, "permission_denied")
    assert_error(as_user(other).post(leave_url(meeting, mine), {"leave_reason": "kicked"}, format="json"),
                 403, "permission_denied")
    response = as_user(host).post(leave_url(meeting, guest), {"leave_reason": "kicked"}, format="json")
    assert response.status_code == 200 and response.json()["leave_reason"] == "kicked"
    assert MeetingParticipant.objects.get(pk=mine.pk).left_at is None


@pytest.mark.parametrize(("payload", "status", "code"), [
    ({"leave_reason": "meeting_ended"}, 400, "invalid"),  # set only by ending the meeting
    ({"leave_reason": "bored"}, 400, "invalid"),
    ({"leave_reason": 1}, 400, "invalid"),
    ({"left_at": "2020-01-01T00:00:00Z"}, 400, "invalid"),
])
def test_leave_validation(as_user, host, payload, status, code):
    meeting = make_meeting(host=host)
    mine = participant(meeting, host)
    assert_error(as_user(host).post(leave_url(meeting, mine), payload, format="json"), status, code)
    assert MeetingParticipant.objects.get(pk=mine.pk).left_at is None


def test_leave_unknown_participant_or_meeting_is_404(as_user, host):
    meeting = make_meeting(host=host)
    elsewhere = participant(make_meeting(host=host), host)
    assert_error(as_user(host).post(leave_url(meeting, elsewhere), format="json"), 404, "not_found")
    url = f"/api/v1/meetings/{uuid.uuid4()}/participants/{uuid.uuid4()}/leave"
    assert_error(as_user(host).post(url, format="json"), 404, "not_found")
