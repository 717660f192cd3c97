"""The permission matrix: every endpoint against the host, another user, nobody (a guest), an API key with
exactly the required scope and an API key with every scope but that one. Endpoints that need no scope (/me,
logout, API keys) or no caller at all (guest-token) have their own table, against the same actors."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone

from accounts.services.users import REGULAR_USER_SCOPES, STAFF_SCOPES
from meetings.models import MeetingParticipant
from tests.factories import make_api_key, make_controller, make_handler, make_meeting, make_recording
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

# name, method, path, body, scope, status for the host, status for another user
MATRIX = [
    ("meetings_list", "GET", "/api/v1/meetings", None, "meetings:read", 200, 200),
    ("meetings_create", "POST", "/api/v1/meetings", {"display_name": "x"}, "meetings:create", 201, 201),
    ("meetings_retrieve", "GET", "/api/v1/meetings/{code}", None, "meetings:read", 200, 200),
    ("meetings_update", "PATCH", "/api/v1/meetings/{meeting}", {"display_name": "y"}, "meetings:write", 200, 403),
    ("meetings_end", "POST", "/api/v1/meetings/{meeting}/end", None, "meetings:write", 200, 403),
    # The host is present already (world): a join gives the open participant back with 200.
    ("meetings_join", "POST", "/api/v1/meetings/{code}/join", {}, "meetings:write", 200, 201),
    ("participants_list", "GET", "/api/v1/meetings/{meeting}/participants", None, "meetings:read", 200, 403),
    ("participants_leave", "POST", "/api/v1/meetings/{meeting}/participants/{participant}/leave", {},
     "meetings:write", 200, 403),
    ("recordings_list", "GET", "/api/v1/meetings/{meeting}/recordings", None, "recordings:read", 200, 403),
    ("recordings_start", "POST", "/api/v1/meetings/{meeting}/recordings", None, "recordings:write", 201, 403),
    ("recordings_retrieve", "GET", "/api/v1/recordings/{recording}", None, "recordings:read", 200, 403),
    ("recordings_update", "PATCH", "/api/v1/recordings/{recording}", {"file_size_bytes": 10},
     "recordings:write", 200, 403),
    ("recordings_share", "POST", "/api/v1/recordings/{ready}/share", None, "recordings:write", 200, 403),
    ("controllers_list", "GET", "/api/v1/controllers", None, "controllers:read", 403, 403),
    ("media_handlers_list", "GET", "/api/v1/media-handlers", None, "controllers:read", 403, 403),
    ("controllers_drain", "POST", "/api/v1/controllers/{controller}/drain", {}, "controllers:write", 403, 403),
    ("controllers_undrain", "POST", "/api/v1/controllers/{draining}/undrain", None, "controllers:write", 403, 403),
]


@pytest.fixture
def world(host):
    controller = make_controller(region="us-east-1")
    draining = make_controller(
        region="us-east-1", health="draining", drain_deadline=timezone.now() + timedelta(hours=1)
    )
    make_handler(region="us-east-1")
    meeting = make_meeting(host=host, allow_recording=True, meeting_code="abc-defg-hjk")
    participant = MeetingParticipant.objects.create(
        meeting=meeting, participant_id=uuid.uuid4(), user=host, display_name="Host", role="host"
    )
    return {
        "meeting": meeting.pk, "code": meeting.meeting_code, "participant": participant.participant_id,
        "controller": controller.controller_id, "draining": draining.controller_id,
        "guest_meeting": make_meeting(host=host, allow_guests=True).meeting_code,
        "host_key": make_api_key(user=host).api_key.pk,
        "recording": make_recording(meeting=meeting).pk,
        "ready": make_recording(meeting=meeting, status="ready").pk,
    }


def call(client, method, path, body, world):
    return client.generic(
        method, path.format(**world), "" if body is None else json.dumps(body),
        content_type="application/json",
    )


def expect(response, status):
    if status >= 400:
        assert_error(response, status, {401: "unauthenticated", 403: "permission_denied", 404: "not_found"}[status])
    else:
        assert response.status_code == status, response.content


@pytest.mark.parametrize(("name", "method", "path", "body", "scope", "host_status", "other_status"), MATRIX,
                         ids=[row[0] for row in MATRIX])
def test_host_and_other_user(as_user, host, other, world, name, method, path, body, scope, host_status,
                             other_status):
    expect(call(as_user(other), method, path, body, world), other_status)
    expect(call(as_user(host), method, path, body, world), host_status)


@pytest.mark.parametrize(("name", "method", "path", "body", "scope", "host_status", "other_status"), MATRIX,
                         ids=[row[0] for row in MATRIX])
def test_nobody_is_401(api, world, name, method, path, body, scope, host_status, other_status):
    expect(call(api, method, path, body, world), 401)


@pytest.mark.parametrize(("name", "method", "path", "body", "scope", "host_status", "other_status"), MATRIX,
                         ids=[row[0] for row in MATRIX])
def test_api_keys_need_exactly_the_scope(as_key, host, operator, world, name, method, path, body, scope,
                                         host_status, other_status):
    owner = host
    if scope.startswith("controllers:"):
        owner, host_status = operator, 200
    all_scopes = STAFF_SCOPES if owner.is_staff else REGULAR_USER_SCOPES
    expect(call(as_key(owner, sorted(all_scopes - {scope})), method, path, body, world), 403)
    expect(call(as_key(owner, [scope]), method, path, body, world), host_status)


@pytest.mark.parametrize(("name", "method", "path", "body", "scope", "host_status", "other_status"), MATRIX,
                         ids=[row[0] for row in MATRIX])
def test_user_tokens_narrowed_to_other_scopes_are_403(as_user, host, world, name, method, path, body, scope,
                                                      host_status, other_status):
    expect(call(as_user(host, scopes=sorted(REGULAR_USER_SCOPES - {scope})), method, path, body, world), 403)


def test_operators_see_the_fleet(as_user, operator, world):
    assert as_user(operator).get("/api/v1/controllers").status_code == 200
    assert as_user(operator).get("/api/v1/media-handlers").status_code == 200


def test_a_participant_who_joined_may_list_participants(as_user, other, world):
    MeetingParticipant.objects.create(meeting_id=world["meeting"], participant_id=uuid.uuid4(), user=other,
                                      display_name="Other")
    assert as_user(other).get(f"/api/v1/meetings/{world['meeting']}/participants").status_code == 200



# name, method, path, body, then the status for: the host, another user, nobody, an API key of the host with
# every scope, an API key of the host with one scope. None of these needs a scope; managing API keys and
# logging out need a user token (a stolen key must not mint keys, and logout revokes a token); guest-token
# needs no caller and ignores credentials. The host goes last: its DELETE and logout change state.
UNSCOPED = [
    ("me", "GET", "/api/v1/me", None, 200, 200, 401, 200, 200),
    ("auth_logout", "POST", "/api/v1/auth/logout", None, 204, 204, 401, 403, 403),
    ("api_keys_list", "GET", "/api/v1/api-keys", None, 200, 200, 401, 403, 403),
    ("api_keys_create", "POST", "/api/v1/api-keys", {"name": "ci", "scopes": ["meetings:read"]},
     201, 201, 401, 403, 403),
    ("api_keys_revoke", "DELETE", "/api/v1/api-keys/{host_key}", None, 204, 404, 401, 403, 403),
    ("meetings_guest_token", "POST", "/api/v1/meetings/{guest_meeting}/guest-token", {"display_name": "G"},
     201, 201, 201, 201, 201),
]


@pytest.mark.parametrize(("name", "method", "path", "body", "host_status", "other_status", "nobody_status",
                          "all_scopes_key_status", "one_scope_key_status"), UNSCOPED, ids=[row[0] for row in UNSCOPED])
def test_endpoints_without_a_scope(api, as_user, as_key, host, other, world, name, method, path, body, host_status,
                                   other_status, nobody_status, all_scopes_key_status, one_scope_key_status):
    expect(call(api, method, path, body, world), nobody_status)
    expect(call(as_user(other), method, path, body, world), other_status)
    expect(call(as_key(host, sorted(REGULAR_USER_SCOPES)), method, path, body, world), all_scopes_key_status)
    expect(call(as_key(host, ["recordings:read"]), method, path, body, world), one_scope_key_status)
    expect(call(as_user(host), method, path, body, world), host_status)
