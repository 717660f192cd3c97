"""What a caller who is not the host sees of a meeting: the detail trimmed to what a joiner needs (no host id,
no MC, no host-only settings), and the participant list only while present and admitted."""

from __future__ import annotations

import uuid

import pytest
from django.utils import timezone

from meetings.models import MeetingParticipant, ParticipantStatus
from tests.factories import make_meeting, make_user
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

MEETINGS = "/api/v1/meetings"
JOINER_FIELDS = {
    "meeting_id", "meeting_code", "display_name", "status", "scheduled_start_time", "actual_start_time", "ended_at",
    "require_auth", "allow_guests", "waiting_room_enabled", "locked", "enable_e2e_encryption", "allow_recording",
}
HOST_ONLY_FIELDS = {
    "host_user_id", "max_participants", "max_guests", "waiting_room_applies_to_users", "assigned_controller_id",
    "assigned_region", "created_at", "updated_at",
}


def participant(meeting, user=None, **extra):
    return MeetingParticipant.objects.create(
        meeting=meeting, participant_id=uuid.uuid4(), user=user, display_name=extra.pop("display_name", "P"), **extra
    )


def test_a_non_host_reads_only_what_a_joiner_needs(as_user, host, other):
    meeting = make_meeting(host=host, assigned_controller_id="mc-secret", assigned_region="us-east-1")
    body = as_user(other).get(f"{MEETINGS}/{meeting.meeting_code}").json()
    assert set(body) == JOINER_FIELDS
    assert str(host.pk) not in str(body) and "mc-secret" not in str(body)


def test_the_host_reads_everything(as_user, host):
    meeting = make_meeting(host=host, assigned_controller_id="mc-a", assigned_region="us-east-1")
    body = as_user(host).get(f"{MEETINGS}/{meeting.pk}").json()
    assert set(body) == JOINER_FIELDS | HOST_ONLY_FIELDS
    assert body["host_user_id"] == str(host.pk) and body["assigned_controller_id"] == "mc-a"


def test_the_join_answer_shows_a_joiner_the_trimmed_meeting_and_the_host_all_of_it(as_user, host, other, controller):
    meeting = make_meeting(host=host)
    joined = as_user(other).post(f"{MEETINGS}/{meeting.pk}/join", {}, format="json").json()
    assert set(joined["meeting"]) == JOINER_FIELDS
    assert joined["controller_id"] == controller.controller_id  # the MC to use is in the answer itself
    hosted = as_user(host).post(f"{MEETINGS}/{meeting.pk}/join", {}, format="json").json()
    assert hosted["meeting"]["host_user_id"] == str(host.pk)


def test_only_the_host_and_present_admitted_participants_list_participants(as_user, host, django_assert_num_queries):
    meeting = make_meeting(host=host)
    present, kicked, past, waiting, outsider = (make_user() for _ in range(5))
    participant(meeting, present)
    participant(meeting, kicked, left_at=timezone.now(), leave_reason="kicked")
    participant(meeting, past, left_at=timezone.now(), leave_reason="voluntary")
    participant(meeting, waiting, status=ParticipantStatus.WAITING)
    url = f"{MEETINGS}/{meeting.pk}/participants"

    listed = as_user(present).get(url)
    assert listed.status_code == 200
    # Admitted participants, present and past; the waiting room is the host's own list.
    assert [p["display_name"] for p in listed.json()["results"]] == ["P", "P", "P"]
    assert all(p["status"] == "admitted" for p in listed.json()["results"])
    with django_assert_num_queries(4):  # user, meeting, count, page
        assert as_user(host).get(url).status_code == 200
    for refused in (kicked, past, waiting, outsider):
        assert_error(as_user(refused).get(url), 403, "permission_denied")
