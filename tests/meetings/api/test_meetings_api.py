"""Meetings over REST: create, list, get by code or id, change settings, end; who may do what."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditLog, OutboxEvent
from controllers.models import MeetingController
from meetings.models import Meeting, MeetingAssignment, MeetingParticipant
from meetings.services import meetings as meeting_services
from tests.factories import make_controller, make_meeting
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

MEETINGS = "/api/v1/meetings"
CODE = re.compile(r"^[a-hjkmnp-z2-9]{3}-[a-hjkmnp-z2-9]{4}-[a-hjkmnp-z2-9]{3}$")


def test_create_meeting(as_user, host):
    start = (timezone.now() + timedelta(hours=1)).replace(microsecond=0)
    response = as_user(host).post(
        MEETINGS,
        {"display_name": "Standup", "max_participants": 8, "allow_guests": True, "require_auth": False,
         "enable_e2e_encryption": False, "allow_recording": True, "waiting_room_enabled": True,
         "scheduled_start_time": start.isoformat()},
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    assert CODE.match(body["meeting_code"]), body["meeting_code"]
    assert body["host_user_id"] == str(host.pk)
    assert body["status"] == "scheduled"
    meeting = Meeting.objects.get(pk=body["meeting_id"])
    assert (meeting.max_participants, meeting.allow_guests, meeting.enable_e2e_encryption) == (8, True, False)
    assert meeting.scheduled_start_time == start
    assert AuditLog.objects.filter(event_type="meeting_created", target_id=str(meeting.pk)).count() == 1


def test_create_defaults(as_user, host):
    body = as_user(host).post(MEETINGS, {"display_name": "x"}, format="json").json()
    assert (body["max_participants"], body["enable_e2e_encryption"], body["require_auth"], body["allow_guests"]) == (
        100, True, False, False
    )


def test_meeting_code_collision_retries_with_another_code(host, monkeypatch):
    make_meeting(host=host, meeting_code="abc-defg-hjk")
    codes = iter(["abc-defg-hjk", "abc-defg-hjk", "xyz-wxyz-xyz"])
    monkeypatch.setattr(meeting_services, "meeting_code_generate", lambda: next(codes))
    meeting = meeting_services.meeting_create(host=host, display_name="second")
    assert meeting.meeting_code == "xyz-wxyz-xyz"


def test_meeting_code_space_exhausted_is_409(as_user, host, monkeypatch):
    make_meeting(host=host, meeting_code="abc-defg-hjk")
    monkeypatch.setattr(meeting_services, "meeting_code_generate", lambda: "abc-defg-hjk")
    assert_error(as_user(host).post(MEETINGS, {"display_name": "x"}, format="json"), 409, "conflict")
    assert Meeting.objects.count() == 1


def test_list_own_meetings_filtered_and_paginated(as_user, host, other, django_assert_num_queries):
    for index in range(5):
        make_meeting(host=host, display_name=f"m{index}")
    make_meeting(host=host, status="ended", ended_at=timezone.now())
    make_meeting(host=other)
    client = as_user(host)
    with django_assert_num_queries(3):  # user, count, page
        body = client.get(MEETINGS, {"limit": 2}).json()
    assert body["count"] == 6 and len(body["results"]) == 2 and body["next"]
    names = [m["display_name"] for m in client.get(MEETINGS, {"limit": 50}).json()["results"]]
    assert len(names) == 6 and "m4" in names
    ended = client.get(MEETINGS, {"status": "ended"}).json()
    assert ended["count"] == 1 and ended["results"][0]["status"] == "ended"
    assert client.get(MEETINGS, {"status": "active"}).json()["count"] == 0


def test_get_by_code_or_id(as_user, host, other):
    meeting = make_meeting(host=host, meeting_code="abc-defg-hjk")
    client = as_user(other)  # anyone with meetings:read may look a meeting up to join it
    by_code = client.get(f"{MEETINGS}/ABC-DEFG-HJK")
    assert by_code.status_code == 200 and by_code.json()["meeting_id"] == str(meeting.pk)
    assert client.get(f"{MEETINGS}/{meeting.pk}").json()["meeting_code"] == "abc-defg-hjk"


def test_patch_settings_host_only(as_user, host, other):
    meeting = make_meeting(host=host)
    response = as_user(host).patch(
        f"{MEETINGS}/{meeting.pk}", {"max_participants": 3, "allow_guests": True}, format="json"
    )
    assert response.status_code == 200, response.content
    assert (response.json()["max_participants"], response.json()["allow_guests"]) == (3, True)
    meeting.refresh_from_db()
    assert meeting.max_participants == 3
    assert_error(as_user(other).patch(f"{MEETINGS}/{meeting.pk}", {"allow_guests": False}, format="json"),
                 403, "permission_denied")
    meeting.refresh_from_db()
    assert meeting.allow_guests is True
    assert AuditLog.objects.filter(event_type="meeting_updated").count() == 1


def test_patch_validation_and_ended(as_user, host):
    meeting = make_meeting(host=host)
    error = assert_error(as_user(host).patch(f"{MEETINGS}/{meeting.pk}", {"status": "active"}, format="json"),
                         400, "invalid")
    assert error["fields"] == {"status": ["Unknown field."]}
    assert_error(as_user(host).patch(f"{MEETINGS}/{meeting.pk}", {"max_participants": 0}, format="json"),
                 400, "invalid")
    ended = make_meeting(host=host, status="ended", ended_at=timezone.now())
    assert_error(as_user(host).patch(f"{MEETINGS}/{ended.pk}", {"display_name": "y"}, format="json"), 410, "gone")
    assert_error(as_user(host).patch(f"{MEETINGS}/{uuid.uuid4()}", {"display_name": "y"}, format="json"),
                 404, "not_found")


def test_end_meeting_closes_everything(as_user, host):
    mc = make_controller(current_meetings=3)
    meeting = make_meeting(host=host, status="active", assigned_controller_id=mc.pk, assigned_region=mc.region)
    MeetingAssignment.objects.create(meeting=meeting, meeting_controller=mc, region=mc.region, assigned_by_gc_id="gc")
    present = MeetingParticipant.objects.create(meeting=meeting, participant_id=uuid.uuid4(), display_name="a",
                                                joined_at=timezone.now() - timedelta(seconds=90))
    gone = MeetingParticipant.objects.create(meeting=meeting, participant_id=uuid.uuid4(), display_name="b",
                                             left_at=timezone.now(), leave_reason="voluntary")
    response = as_user(host).post(f"{MEETINGS}/{meeting.pk}/end")
    assert response.status_code == 200, response.content
    assert response.json()["status"] == "ended" and response.json()["ended_at"]
    assignment = MeetingAssignment.objects.get(meeting=meeting)
    assert assignment.ended_at is not None and assignment.end_reason == "meeting_ended"
    assert MeetingController.objects.get(pk=mc.pk).current_meetings == 2
    # The meeting no longer points at the MC it left.
    assert Meeting.objects.filter(pk=meeting.pk, assigned_controller_id=None, assigned_region=None).exists()
    present.refresh_from_db()
    gone.refresh_from_db()
    assert present.leave_reason == "meeting_ended" and present.left_at is not None
    assert 89 <= present.total_duration_seconds <= 120
    assert gone.leave_reason == "voluntary"
    event = OutboxEvent.objects.get(event_type="meeting_ended")
    assert event.payload == {"meeting_id": str(meeting.pk), "controller_ids": [mc.pk]}
    assert AuditLog.objects.filter(event_type="meeting_ended", actor_user_id=host.pk).count() == 1
    # Ending twice: gone.
    assert_error(as_user(host).post(f"{MEETINGS}/{meeting.pk}/end"), 410, "gone")


def test_ending_a_meeting_before_the_mc_reported_it_gives_back_the_in_flight_count(as_user, host):
    # Assigned since the MC's last heartbeat: counted in assigned_since_heartbeat, not yet in current_meetings.
    mc = make_controller(current_meetings=3, assigned_since_heartbeat=2)
    meeting = make_meeting(host=host, status="active", assigned_controller_id=mc.pk, assigned_region=mc.region)
    MeetingAssignment.objects.create(meeting=meeting, meeting_controller=mc, region=mc.region, assigned_by_gc_id="gc")
    assert as_user(host).post(f"{MEETINGS}/{meeting.pk}/end").status_code == 200
    mc.refresh_from_db()
    assert (mc.current_meetings, mc.assigned_since_heartbeat) == (3, 1)


def test_end_is_host_only(as_user, host, other):
    meeting = make_meeting(host=host)
    assert_error(as_user(other).post(f"{MEETINGS}/{meeting.pk}/end"), 403, "permission_denied")
    assert Meeting.objects.get(pk=meeting.pk).status == "scheduled"
    assert_error(as_user(host).post(f"{MEETINGS}/{uuid.uuid4()}/end"), 404, "not_found")
    assert_error(as_user(host).post(f"{MEETINGS}/{meeting.pk}/end", {"now": True}, format="json"), 400, "invalid")
