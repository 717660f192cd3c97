"""What the API answers a client who made a mistake, one who must wait, and one who created something: an unknown
region is the client's 400 naming the known regions, no capacity in a known region is a 503 with Retry-After that
django.request does not log at ERROR, and every 201 carries a Location the client can GET."""

from __future__ import annotations

import logging

import pytest
from django.http import HttpRequest, HttpResponse
from django.test.utils import override_script_prefix
from django.utils.log import log_response

from meetings.models import MeetingAssignment, MeetingParticipant
from tests.factories import make_controller, make_meeting, make_user
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db


def join_url(ref):
    return f"/api/v1/meetings/{ref}/join"


def test_a_region_where_no_mc_ever_registered_is_a_400_naming_the_known_regions(as_user, host):
    make_controller(region="eu-west-1")
    make_controller(region="us-east-1", health="unhealthy")
    meeting = make_meeting(host=host)

    response = as_user(host).post(join_url(meeting.pk), {"region": "mars-north-1"}, format="json")

    error = assert_error(response, 400, "invalid")
    assert "Retry-After" not in response
    assert error["fields"]["region"] == [
        "No meeting controller has registered in region mars-north-1; known regions: eu-west-1, us-east-1."
    ]
    assert not MeetingParticipant.objects.exists() and not MeetingAssignment.objects.exists()


def test_a_guest_join_into_an_unknown_region_is_a_400_too(api, host):
    make_controller(region="us-east-1")
    meeting = make_meeting(host=host, allow_guests=True, require_auth=False)
    response = api.post(
        f"/api/v1/meetings/{meeting.pk}/guest-token", {"region": "nowhere-1", "display_name": "Ann"}, format="json"
    )
    assert "region" in assert_error(response, 400, "invalid")["fields"]


def test_an_empty_fleet_names_no_region(as_user, host):
    meeting = make_meeting(host=host)
    error = assert_error(as_user(host).post(join_url(meeting.pk), format="json"), 400, "invalid")
    assert error["fields"]["region"] == [
        "No meeting controller has registered in region us-east-1; known regions: none."
    ]


def test_a_known_region_without_capacity_stays_503_and_is_not_logged_at_error(as_user, host, caplog):
    make_controller(region="us-east-1", health="unhealthy")
    meeting = make_meeting(host=host)

    with caplog.at_level(logging.DEBUG, logger="django.request"):
        response = as_user(host).post(join_url(meeting.pk), format="json")

    assert_error(response, 503, "no_controller_available")
    assert response["Retry-After"]
    logged = [record for record in caplog.records if record.name == "django.request"]
    assert logged, "the 503 is still logged, below ERROR"
    assert all(record.levelno <= logging.WARNING for record in logged)


def test_expected_4xx_answers_are_not_logged_at_error(as_user, host, caplog):
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        assert_error(as_user(host).get("/api/v1/meetings/no-such-meeting"), 404, "not_found")
        assert_error(as_user(host).post("/api/v1/meetings", {}, format="json"), 400, "invalid")
    assert [record.levelno for record in caplog.records if record.name == "django.request"] == [
        logging.WARNING, logging.WARNING
    ]


def test_a_server_error_is_still_logged_at_error(caplog):
    request = HttpRequest()
    request.path = "/api/v1/meetings"
    with caplog.at_level(logging.DEBUG, logger="django.request"):
        log_response("%s: %s", "Internal Server Error", request.path, response=HttpResponse(status=500),
                     request=request)
    assert [record.levelno for record in caplog.records if record.name == "django.request"] == [logging.ERROR]


def test_a_created_meeting_answers_its_location(as_user, host):
    client = as_user(host)
    response = client.post("/api/v1/meetings", {"display_name": "Standup"}, format="json")
    assert response.status_code == 201
    meeting_id = response.json()["meeting_id"]
    assert response["Location"] == f"/api/v1/meetings/{meeting_id}"
    assert client.get(response["Location"]).json()["meeting_id"] == meeting_id


def test_a_join_answers_the_participant_location_and_a_replay_too(as_user, host, other):
    make_controller(region="us-east-1")
    meeting = make_meeting(host=host)
    client = as_user(other)

    response = client.post(join_url(meeting.pk), format="json", HTTP_IDEMPOTENCY_KEY="join-location")
    assert response.status_code == 201
    participant_id = response.json()["participant"]["participant_id"]
    assert response["Location"] == f"/api/v1/meetings/{meeting.pk}/participants/{participant_id}"
    fetched = client.get(response["Location"])
    assert fetched.status_code == 200 and fetched.json()["participant_id"] == participant_id

    replay = client.post(join_url(meeting.pk), format="json", HTTP_IDEMPOTENCY_KEY="join-location")
    assert replay["Idempotent-Replayed"] == "true"
    assert replay["Location"] == response["Location"]
    # A reload (200, no new participant) creates nothing: no Location.
    assert "Location" not in client.post(join_url(meeting.pk), format="json")


def test_a_participant_is_visible_to_the_host_and_itself_only(as_user, host, other):
    make_controller(region="us-east-1")
    meeting = make_meeting(host=host)
    location = as_user(other).post(join_url(meeting.pk), format="json")["Location"]
    assert as_user(host).get(location).status_code == 200
    assert_error(as_user(make_user()).get(location), 404, "not_found")


def test_a_guest_join_answers_a_location(api, host):
    make_controller(region="us-east-1")
    meeting = make_meeting(host=host, allow_guests=True, require_auth=False)
    response = api.post(f"/api/v1/meetings/{meeting.pk}/guest-token", {"display_name": "Ann"}, format="json")
    assert response.status_code == 201
    participant_id = response.json()["participant"]["participant_id"]
    assert response["Location"] == f"/api/v1/meetings/{meeting.pk}/participants/{participant_id}"


def test_a_started_recording_answers_its_location(as_user, host):
    meeting = make_meeting(host=host, allow_recording=True)
    client = as_user(host)
    response = client.post(f"/api/v1/meetings/{meeting.pk}/recordings", format="json")
    assert response.status_code == 201
    recording_id = response.json()["recording_id"]
    assert response["Location"] == f"/api/v1/recordings/{recording_id}"
    assert client.get(response["Location"]).status_code == 200


def test_a_created_api_key_answers_its_location(as_user, host):
    client = as_user(host)
    response = client.post(
        "/api/v1/api-keys", {"name": "ci", "scopes": ["meetings:read"]}, format="json",
        HTTP_IDEMPOTENCY_KEY="key-location",
    )
    assert response.status_code == 201
    key_id = response.json()["key_id"]
    assert response["Location"] == f"/api/v1/api-keys/{key_id}"
    assert client.get(response["Location"]).json()["key_id"] == key_id
    replay = client.post(
        "/api/v1/api-keys", {"name": "ci", "scopes": ["meetings:read"]}, format="json",
        HTTP_IDEMPOTENCY_KEY="key-location",
    )
    assert replay["Location"] == response["Location"]


def test_a_join_location_keeps_the_script_prefix_it_is_served_under(as_user, host, other):
    # Behind a proxy that mounts the API under a path (SCRIPT_NAME, the script prefix Django's WSGI handler sets;
    # the test client does not), the Location is that path's, and a join served without one after answers its own.
    make_controller(region="us-east-1")
    meeting = make_meeting(host=host)

    with override_script_prefix("/gc/"):
        mounted = as_user(other).post(join_url(meeting.pk), format="json")
    assert mounted.status_code == 201
    participant_id = mounted.json()["participant"]["participant_id"]
    assert mounted["Location"] == f"/gc/api/v1/meetings/{meeting.pk}/participants/{participant_id}"

    plain = as_user(host).post(join_url(meeting.pk), format="json")
    assert plain.status_code == 201
    host_participant = plain.json()["participant"]["participant_id"]
    assert plain["Location"] == f"/api/v1/meetings/{meeting.pk}/participants/{host_participant}"
