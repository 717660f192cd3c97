"""The join flow over REST: participant, assigned MC and meeting token; guests; full, ended, no capacity."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone
from rest_framework.renderers import JSONRenderer

from accounts.tokens import token_verify
from audit.models import AuditLog, OutboxEvent
from controllers.models import MeetingController
from darktower.errors import Unauthenticated
from meetings.api.serializers import MeetingSerializer, meeting_for_joiner
from meetings.models import Meeting, MeetingAssignment, MeetingParticipant
from tests.factories import make_controller, make_meeting, make_user
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

REGION = "us-east-1"


def join_url(ref):
    return f"/api/v1/meetings/{ref}/join"


def guest_url(ref):
    return f"/api/v1/meetings/{ref}/guest-token"


def test_join_returns_participant_mc_and_meeting_token(as_user, host, other, controller):
    meeting = make_meeting(host=host, meeting_code="abc-defg-hjk")
    response = as_user(other).post(join_url("abc-defg-hjk"), {"client_version": "1.2.3"}, format="json",
                                   HTTP_USER_AGENT="pytest")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["controller_id"] == controller.controller_id
    assert body["grpc_endpoint"] == controller.grpc_endpoint
    assert body["webtransport_endpoint"] == controller.webtransport_endpoint
    assert body["region"] == REGION == settings.DEFAULT_REGION
    assert body["token_type"] == "Bearer" and body["expires_in"] == 300
    assert body["meeting"]["status"] == "active" and body["meeting"]["actual_start_time"]
    assert "assigned_controller_id" not in body["meeting"]  # a joiner's view; its MC is controller_id above
    participant = body["participant"]
    assert participant["role"] == "participant" and participant["user_id"] == str(other.pk)
    assert participant["display_name"] == other.display_name
    row = MeetingParticipant.objects.get(participant_id=participant["participant_id"])
    assert (row.client_version, row.user_agent) == ("1.2.3", "pytest")

    claims = token_verify(body["meeting_token"], audience=settings.JWT_MEETING_AUDIENCE)
    assert claims.claims["meeting_id"] == str(meeting.pk)
    assert claims.claims["participant_id"] == participant["participant_id"]
    assert claims.claims["role"] == "participant"
    assert claims.expires_at - claims.issued_at == timedelta(minutes=5)
    with pytest.raises(Unauthenticated):  # a meeting token is no API token
        token_verify(body["meeting_token"], audience=settings.JWT_API_AUDIENCE)

    assert AuditLog.objects.filter(event_type="participant_joined", target_id=str(meeting.pk)).count() == 1


def test_the_host_joins_as_host_and_everyone_gets_the_same_mc(as_user, host, other, controller):
    make_controller(region=REGION)  # a second MC: the meeting must still stay on one
    meeting = make_meeting(host=host)
    first = as_user(host).post(join_url(meeting.pk), format="json").json()
    assert first["participant"]["role"] == "host"
    assert token_verify(first["meeting_token"], audience=settings.JWT_MEETING_AUDIENCE).claims["role"] == "host"
    for _ in range(3):
        again = as_user(make_user()).post(join_url(meeting.meeting_code), format="json").json()
        assert again["controller_id"] == first["controller_id"]
    assert MeetingAssignment.objects.filter(meeting=meeting).count() == 1
    assert MeetingParticipant.objects.filter(meeting=meeting).count() == 4


def test_join_in_another_region(as_user, host):
    far = make_controller(region="ap-south-1")
    meeting = make_meeting(host=host)
    body = as_user(host).post(join_url(meeting.pk), {"region": "ap-south-1"}, format="json").json()
    assert (body["controller_id"], body["region"]) == (far.controller_id, "ap-south-1")


@pytest.mark.parametrize(
    ("payload", "field"),
    [({"region": "US EAST"}, "region"), ({"region": 5}, "region"), ({"role": "host"}, "role"),
     ({"display_name": "x" * 256}, "display_name")],
)
def test_join_validation(as_user, host, controller, payload, field):
    meeting = make_meeting(host=host)
    error = assert_error(as_user(host).post(join_url(meeting.pk), payload, format="json"), 400, "invalid")
    assert field in error["fields"]
    assert not MeetingParticipant.objects.exists()


def test_no_controller_available_is_503_with_retry_after(as_user, host, settings):
    settings.NO_CAPACITY_RETRY_AFTER_SECONDS = 7
    make_controller(region=REGION, health="unhealthy")
    make_controller(region=REGION, current_meetings=100, max_meetings=100)
    meeting = make_meeting(host=host)
    response = as_user(host).post(join_url(meeting.pk), format="json")
    assert_error(response, 503, "no_controller_available")
    assert response["Retry-After"] == "7"
    # Nothing half-written: no participant, no assignment, the meeting still scheduled.
    assert not MeetingParticipant.objects.exists()
    assert not MeetingAssignment.objects.exists()
    assert Meeting.objects.get(pk=meeting.pk).status == "scheduled"
    assert not OutboxEvent.objects.exists()


def test_a_full_meeting_is_409(as_user, host, other, controller):
    meeting = make_meeting(host=host, max_participants=2)
    third = make_user()
    assert as_user(host).post(join_url(meeting.pk), format="json").status_code == 201
    assert as_user(other).post(join_url(meeting.pk), format="json").status_code == 201
    assert_error(as_user(third).post(join_url(meeting.pk), format="json"), 409, "conflict")
    # A seat frees up when someone leaves.
    MeetingParticipant.objects.filter(meeting=meeting, role="host").update(left_at=timezone.now())
    assert as_user(third).post(join_url(meeting.pk), format="json").status_code == 201


def test_an_ended_meeting_is_410(as_user, host, controller):
    meeting = make_meeting(host=host, status="ended", ended_at=timezone.now())
    assert_error(as_user(host).post(join_url(meeting.pk), format="json"), 410, "gone")
    assert_error(as_user(host).post(join_url(uuid.uuid4()), format="json"), 404, "not_found")
    assert_error(as_user(host).post(join_url("zzz-zzzz-zzz"), format="json"), 404, "not_found")


def test_guests_join_meetings_that_allow_them(api, host, controller):
    meeting = make_meeting(host=host, allow_guests=True)
    response = api.post(guest_url(meeting.meeting_code), {"display_name": "Visitor"}, format="json")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["participant"]["role"] == "guest" and body["participant"]["user_id"] is None
    assert body["participant"]["display_name"] == "Visitor"
    assert body["controller_id"] == controller.controller_id
    claims = token_verify(body["meeting_token"], audience=settings.JWT_MEETING_AUDIENCE)
    assert claims.claims["role"] == "guest"


@pytest.mark.parametrize("settings_", [{"allow_guests": False}, {"allow_guests": True, "require_auth": True}])
def test_guests_are_refused_where_not_allowed(api, host, controller, settings_):
    meeting = make_meeting(host=host, **settings_)
    assert_error(api.post(guest_url(meeting.pk), {"display_name": "Visitor"}, format="json"), 403,
                 "permission_denied")
    assert not MeetingParticipant.objects.exists()


def test_guest_token_validation_and_errors(api, host, controller):
    meeting = make_meeting(host=host, allow_guests=True, max_participants=1)
    error = assert_error(api.post(guest_url(meeting.pk), {}, format="json"), 400, "invalid")
    assert "display_name" in error["fields"]
    assert api.post(guest_url(meeting.pk), {"display_name": "G1"}, format="json").status_code == 201
    assert_error(api.post(guest_url(meeting.pk), {"display_name": "G2"}, format="json"), 409, "conflict")
    Meeting.objects.filter(pk=meeting.pk).update(status="ended", ended_at=timezone.now())
    assert_error(api.post(guest_url(meeting.pk), {"display_name": "G3"}, format="json"), 410, "gone")


def test_join_counts_toward_the_mc_load(as_user, host):
    make_controller(region=REGION, controller_id="mc-only", current_meetings=0)
    for _ in range(3):
        meeting = make_meeting(host=host)
        as_user(host).post(join_url(meeting.pk), format="json")
    # In-flight accounting (meetings.services.assignment): joins count until the MC's next heartbeat reports them.
    controller = MeetingController.objects.get(pk="mc-only")
    assert controller.current_meetings + controller.assigned_since_heartbeat == 3


def test_a_reload_gives_the_open_participant_back_without_taking_a_seat(as_user, host, other, controller):
    meeting = make_meeting(host=host, max_participants=2)
    first = as_user(other).post(join_url(meeting.pk), {"display_name": "Tab 1"}, format="json")
    assert first.status_code == 201
    assert as_user(host).post(join_url(meeting.pk), format="json").status_code == 201  # now full
    # A reload (a second tab, a retry without Idempotency-Key) of someone present: admitted even though the
    # meeting is full, with the same participant and a fresh token, and no second row.
    again = as_user(other).post(join_url(meeting.meeting_code), {"display_name": "Tab 2"}, format="json")
    assert again.status_code == 200, again.content
    assert again.json()["participant"] == first.json()["participant"]
    assert again.json()["controller_id"] == first.json()["controller_id"]
    assert again.json()["meeting_token"] != first.json()["meeting_token"]
    claims = token_verify(again.json()["meeting_token"], audience=settings.JWT_MEETING_AUDIENCE).claims
    assert claims["participant_id"] == first.json()["participant"]["participant_id"]
    assert MeetingParticipant.objects.filter(meeting=meeting).count() == 2
    assert AuditLog.objects.filter(event_type="participant_rejoined", target_id=str(meeting.pk)).count() == 1
    # Someone else still finds the meeting full.
    assert_error(as_user(make_user()).post(join_url(meeting.pk), format="json"), 409, "conflict")
    # Once left, joining again is a new session.
    MeetingParticipant.objects.filter(meeting=meeting, user=other).update(left_at=timezone.now())
    rejoined = as_user(other).post(join_url(meeting.pk), format="json")
    assert rejoined.status_code == 201
    assert rejoined.json()["participant"]["participant_id"] != first.json()["participant"]["participant_id"]


def test_a_join_costs_a_fixed_number_of_statements(as_user, host, other, controller, django_assert_num_queries):
    # Pinned so that the join's statement count cannot creep back (bench/RESULTS.md, bench 2). Inside the test's
    # transaction the join's BEGIN / COMMIT are a SAVEPOINT / RELEASE.
    meeting = make_meeting(host=host)
    first_client, second_client = as_user(other), as_user(make_user())
    # Savepoint, the meeting_join statement (the user found active, meeting lock, checks, seats, the user's open
    # participant, the candidates, assignment insert, MC claim, meeting's MC and its start, outbox, participant,
    # both audit rows), release.
    with django_assert_num_queries(3):
        first = first_client.post(join_url(meeting.pk), format="json")
    assert first.status_code == 201, first.content
    # The assignment reused: savepoint, the meeting_join statement (which writes the participant and its audit
    # row), release.
    with django_assert_num_queries(3):
        second = second_client.post(join_url(meeting.meeting_code), format="json")
    assert second.status_code == 201, second.content
    assert second.json()["controller_id"] == first.json()["controller_id"] == controller.controller_id
    # A reload: the open participant comes back from the meeting_join statement, no insert.
    with django_assert_num_queries(3):
        again = first_client.post(join_url(meeting.pk), format="json")
    assert again.status_code == 200, again.content
    assert again.json()["participant"] == first.json()["participant"]
    # The meeting answered is the row as the join left it (started, pointing at its MC), without a read after.
    meeting.refresh_from_db()
    assert (meeting.status, meeting.assigned_controller_id) == ("active", controller.controller_id)
    stored = meeting_for_joiner(json.loads(JSONRenderer().render(MeetingSerializer(meeting).data)))
    for response in (first, second, again):
        assert response.json()["meeting"] == stored
    events = AuditLog.objects.filter(target_id=str(meeting.pk)).order_by("id").values_list("event_type", flat=True)
    assert list(events) == ["meeting_assigned", "participant_joined", "participant_joined", "participant_rejoined"]
