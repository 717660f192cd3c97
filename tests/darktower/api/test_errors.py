"""Bad input never reaches a 500: malformed JSON, wrong types, unknown fields, huge bodies, bad UUIDs, wrong
media types and methods all answer the one error shape."""

from __future__ import annotations

import json
import uuid

import pytest
from django.db import DataError
from django.urls import get_resolver

from darktower.api import errors
from darktower.api.errors import exception_handler
from meetings.models import Meeting
from tests.factories import make_controller, make_meeting, make_user
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

MEETINGS = "/api/v1/meetings"
# A meeting id that names nothing; fixed, so that test ids are the same in every collection (pytest-xdist).
NOBODY = "5e1f0c3a-9d7b-4c2e-8a61-0b7d3f2e4c19"


def post_raw(client, path, body: bytes | str, content_type="application/json"):
    return client.generic("POST", path, body, content_type=content_type)


@pytest.mark.parametrize(
    "body",
    [
        b'{"display_name": "x"',  # truncated
        b"{display_name: 1}",
        b'{"display_name": NaN}',
        b'{"max_participants": Infinity, "display_name": "x"}',
        b"\xff\xfe not utf-8",
        b"[" * 100_000 + b"]" * 100_000,  # deep enough to exhaust the recursion limit
        b'{"display_name": "\\ud800"}',  # a lone surrogate cannot be stored as UTF-8
        b'{"display_name": "a\\u0000b"}',  # PostgreSQL refuses NUL in text and jsonb
        b'{"display_name": "x", "\\u0000": 1}',
        b'{"display_name": "x", "pad": [{"deep": ["\\u0000"]}]}',
    ],
    ids=["truncated", "bare-key", "nan", "infinity", "not-utf8", "deep-nesting", "lone-surrogate", "nul-value",
         "nul-key", "nul-nested"],
)
def test_malformed_json_is_400(as_user, host, body):
    response = post_raw(as_user(host), MEETINGS, body)
    assert_error(response, 400, "malformed_request")
    assert not Meeting.objects.exists()


def test_a_literal_backslash_u0000_is_just_text(as_user, host):
    response = post_raw(as_user(host), MEETINGS, b'{"display_name": "a\\\\u0000b"}')
    assert response.status_code == 201 and response.json()["display_name"] == "a\\u0000b"


@pytest.mark.parametrize("path", ["/api/v1/meetings", "/api/v1/meetings/{code}/join", "/api/v1/api-keys"])
def test_nul_in_a_body_with_an_idempotency_key_is_400_and_stores_nothing_unstorable(as_user, host, path):
    # An unknown field's name is echoed in the error, and the error is stored in the idempotency ledger (jsonb).
    meeting = make_meeting(host=host)
    body = b'{"display_name": "x", "a\\u0000b": 1}'
    for _ in range(2):
        response = as_user(host).generic("POST", path.format(code=meeting.meeting_code), body,
                                         content_type="application/json", HTTP_IDEMPOTENCY_KEY="nul-1")
        assert_error(response, 400, "malformed_request")


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"display_name": "x", "max_participants": "10"}, "max_participants"),
        ({"display_name": "x", "max_participants": 10.0}, "max_participants"),
        ({"display_name": "x", "max_participants": True}, "max_participants"),
        ({"display_name": "x", "max_participants": 0}, "max_participants"),
        ({"display_name": "x", "max_participants": 1001}, "max_participants"),
        ({"display_name": "x", "max_participants": 2**70}, "max_participants"),
        ({"display_name": "x", "require_auth": "yes"}, "require_auth"),
        ({"display_name": "x", "allow_guests": 1}, "allow_guests"),
        ({"display_name": 12}, "display_name"),
        ({"display_name": ["x"]}, "display_name"),
        ({"display_name": "x" * 256}, "display_name"),
        ({"display_name": "x", "scheduled_start_time": "tomorrow"}, "scheduled_start_time"),
        ({}, "display_name"),
    ],
)
def test_wrong_types_and_bounds_are_400_with_the_field(as_user, host, payload, field):
    error = assert_error(as_user(host).post(MEETINGS, payload, format="json"), 400, "invalid")
    assert list(error["fields"]) == [field]
    assert not Meeting.objects.exists()


def test_unknown_fields_are_400_not_ignored(as_user, host):
    error = assert_error(
        as_user(host).post(MEETINGS, {"display_name": "x", "status": "ended", "hax": 1}, format="json"), 400, "invalid"
    )
    assert error["fields"] == {"hax": ["Unknown field."], "status": ["Unknown field."]}
    assert not Meeting.objects.exists()


@pytest.mark.parametrize("body", [b"[]", b'"a string"', b"42", b"null"])
def test_a_body_that_is_not_an_object_is_400(as_user, host, body):
    assert_error(post_raw(as_user(host), MEETINGS, body), 400, "invalid")


def test_huge_body_is_413(as_user, host, settings):
    body = json.dumps({"display_name": "x", "pad": "y" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)})
    assert_error(post_raw(as_user(host), MEETINGS, body), 413, "payload_too_large")
    assert not Meeting.objects.exists()


def test_huge_body_is_413_before_authentication(api, settings):
    body = "x" * (settings.DATA_UPLOAD_MAX_MEMORY_SIZE + 1)
    assert_error(post_raw(api, "/api/v1/auth/login", body), 413, "payload_too_large")


def test_form_bodies_are_415(as_user, host):
    response = post_raw(as_user(host), MEETINGS, "display_name=x", content_type="application/x-www-form-urlencoded")
    assert_error(response, 415, "unsupported_media_type")


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/api/v1/meetings/not-a-uuid/end"),
        ("GET", "/api/v1/meetings/not-a-uuid/participants"),
        ("POST", "/api/v1/meetings/00000000-0000-0000-0000-00000000000g/recordings"),
        ("GET", "/api/v1/recordings/123"),
        ("PATCH", "/api/v1/recordings/123"),
        ("POST", "/api/v1/recordings/123/share"),
        ("DELETE", "/api/v1/api-keys/abc"),
        ("POST", f"/api/v1/meetings/{NOBODY}/participants/nope/leave"),
        ("POST", "/api/v1/nothing-here"),
        ("GET", "/api/v2/meetings"),
    ],
)
def test_bad_uuids_and_unknown_paths_are_json_404(as_user, host, method, path):
    response = as_user(host).generic(method, path, "{}", content_type="application/json")
    assert_error(response, 404, "not_found")


def test_unknown_meeting_reference_is_404(as_user, host):
    assert_error(as_user(host).get(f"{MEETINGS}/no-such-code"), 404, "not_found")
    assert_error(as_user(host).get(f"{MEETINGS}/{uuid.uuid4()}"), 404, "not_found")


def test_method_not_allowed_is_405_in_the_error_shape(as_user, host):
    assert_error(as_user(host).delete(MEETINGS), 405, "method_not_allowed")


def test_outside_the_api_404_stays_html(client):
    response = client.get("/no-such-page")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_bad_query_filter_is_400(as_user, host):
    error = assert_error(as_user(host).get(MEETINGS, {"status": "bogus"}), 400, "invalid")
    assert "status" in error["fields"]


@pytest.fixture
def nul_world(host, operator):
    make_controller(region="us-east-1", controller_id="mc-a")
    return make_meeting(host=host, allow_guests=True)


@pytest.mark.parametrize(
    ("method", "path", "actor"),
    [
        ("GET", "/api/v1/meetings/a%00b", "host"),
        ("PATCH", "/api/v1/meetings/a%00b", "host"),
        ("POST", "/api/v1/meetings/a%00b/join", "host"),
        ("POST", "/api/v1/meetings/a%00b/guest-token", None),
        ("POST", "/api/v1/controllers/mc%00a/drain", "operator"),
        ("POST", "/api/v1/controllers/mc%00a/undrain", "operator"),
        ("POST", "/api/v1/auth/service/token%00", None),
        ("GET", "/api/v1/%00", None),
    ],
)
def test_a_nul_character_in_the_path_is_a_json_404_before_any_query(
    api, as_user, host, operator, nul_world, django_assert_num_queries, method, path, actor
):
    client = {"host": as_user(host), "operator": as_user(operator), None: api}[actor]
    with django_assert_num_queries(0):
        response = client.generic(method, path, "" if method == "GET" else "{}", content_type="application/json")
    assert_error(response, 404, "not_found")


def test_a_nul_character_in_an_admin_path_is_a_plain_404_before_any_query(client, django_assert_num_queries):
    staff = make_user(is_staff=True, is_superuser=True)
    client.force_login(staff)
    with django_assert_num_queries(0):
        response = client.get("/admin/controllers/meetingcontroller/a%00b/change/")
    assert response.status_code == 404
    assert not response["Content-Type"].startswith("application/json")


def test_a_database_refusal_left_over_is_400_not_500():
    # The net under the input checks: whatever value PostgreSQL still refuses is the client's input.
    response = exception_handler(DataError("value too long"), {})
    assert response.status_code == 400
    assert response.data["error"]["code"] == "invalid"


@pytest.mark.parametrize("path", ["/api/v1/meetings", "/api/v1/auth/service/token", "/api/nothing", "/ready"])
def test_a_host_header_not_allowed_is_a_json_400_under_the_api(client, path, settings):
    settings.ALLOWED_HOSTS = ["darktower.example"]
    response = client.get(path, HTTP_HOST="evil.example")
    assert_error(response, 400, "bad_request")
    assert client.get(path, HTTP_HOST="darktower.example").status_code != 400


def test_a_host_header_not_allowed_stays_html_outside_the_api(client, settings):
    settings.ALLOWED_HOSTS = ["darktower.example"]
    response = client.get("/admin/", HTTP_HOST="evil.example")
    assert response.status_code == 400
    assert response["Content-Type"].startswith("text/html")


@pytest.mark.parametrize(
    ("view", "status", "code"),
    [(errors.permission_denied, 403, "permission_denied"), (errors.csrf_failure, 403, "csrf_failed")],
)
def test_permission_and_csrf_refusals_outside_drf_answer_json_under_the_api(rf, view, status, code):
    # handler403 and CSRF_FAILURE_VIEW: every API view is CSRF-exempt and raises DRF's own 403, so these only
    # answer a view added without that; called directly, as Django would.
    response = view(rf.post("/api/v1/meetings"))
    assert (response.status_code, response["Content-Type"]) == (status, "application/json")
    assert json.loads(response.content)["error"]["code"] == code
    page = view(rf.post("/admin/login/"))
    assert page.status_code == 403 and page["Content-Type"].startswith("text/html")


def test_the_handlers_are_wired(settings):
    resolver = get_resolver()
    assert resolver.resolve_error_handler(400) is errors.bad_request
    assert resolver.resolve_error_handler(403) is errors.permission_denied
    assert settings.CSRF_FAILURE_VIEW == "darktower.api.errors.csrf_failure"
