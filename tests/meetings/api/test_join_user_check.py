"""A signed-in join checks its user (exists, active) in the join's own statement instead of a read of its own; every
answer but a successful join still checks it first, so a deactivated or erased user gets the 401 it always got."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from accounts.models import User
from audit.models import AuditLog
from darktower.api.errors import WWW_AUTHENTICATE
from meetings.models import MeetingParticipant
from tests.factories import make_meeting, make_user
from tests.fixtures.api_errors import assert_error

REGION = "us-east-1"
INACTIVE = "Unknown or inactive user."


def join_url(ref: object) -> str:
    return f"/api/v1/meetings/{ref}/join"


def assert_refused_as_inactive(response) -> None:
    error = assert_error(response, 401, "unauthenticated")
    assert error["message"] == INACTIVE
    assert response["WWW-Authenticate"] == WWW_AUTHENTICATE


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", ["first", "reused", "reload"])
def test_a_bearer_join_without_a_key_is_one_statement(as_user, controller, kind):
    host = make_user()
    meeting = make_meeting(host=host)
    joiner = make_user()
    if kind != "first":
        as_user(host if kind == "reused" else joiner).post(join_url(meeting.pk), {"region": REGION}, format="json")
    client = as_user(joiner)
    with CaptureQueriesContext(connection) as queries:
        response = client.post(join_url(meeting.pk), {"region": REGION}, format="json")
    assert response.status_code == (200 if kind == "reload" else 201), response.content
    statements = [query["sql"] for query in queries.captured_queries]
    assert len(statements) == 1 and "meeting_join(" in statements[0], [sql[:120] for sql in statements]


@pytest.mark.django_db
@pytest.mark.parametrize("how", ["deactivated", "erased"])
def test_a_deactivated_or_erased_user_cannot_join_and_nothing_is_written(as_user, host, controller, how):
    meeting = make_meeting(host=host)
    joiner = make_user()
    client = as_user(joiner)
    if how == "deactivated":
        User.objects.filter(pk=joiner.pk).update(is_active=False)
    else:
        User.objects.filter(pk=joiner.pk).delete()
    audit_before = AuditLog.objects.count()
    assert_refused_as_inactive(client.post(join_url(meeting.pk), {"region": REGION}, format="json"))
    assert not MeetingParticipant.objects.filter(meeting=meeting).exists()
    assert AuditLog.objects.count() == audit_before
    meeting.refresh_from_db()
    assert meeting.assigned_controller_id is None


@pytest.mark.django_db
@pytest.mark.parametrize("request_kind", ["invalid body", "malformed meeting ref", "unknown meeting", "ended meeting"])
def test_a_deactivated_user_gets_401_before_any_other_refusal(as_user, host, controller, request_kind):
    ended = {"status": "ended", "ended_at": timezone.now()} if request_kind == "ended meeting" else {}
    meeting = make_meeting(host=host, **ended)
    joiner = make_user()
    client = as_user(joiner)
    User.objects.filter(pk=joiner.pk).update(is_active=False)
    ref = {"malformed meeting ref": "x" * 300, "unknown meeting": uuid.uuid4()}.get(request_kind, meeting.pk)
    body = {"region": 7} if request_kind == "invalid body" else {"region": REGION}
    assert_refused_as_inactive(client.post(join_url(ref), body, format="json"))


@pytest.mark.django_db
def test_a_deactivated_user_gets_401_rather_than_429(as_user, host, controller, settings):
    settings.RATE_LIMIT_JOIN_PER_PRINCIPAL = 1
    meeting = make_meeting(host=host)
    joiner = make_user()
    client = as_user(joiner)
    assert client.post(join_url(meeting.pk), {"region": REGION}, format="json").status_code == 201
    assert_error(client.post(join_url(meeting.pk), {"region": REGION}, format="json"), 429, "throttled")
    User.objects.filter(pk=joiner.pk).update(is_active=False)
    assert_refused_as_inactive(client.post(join_url(meeting.pk), {"region": REGION}, format="json"))


@pytest.mark.django_db
def test_an_idempotent_replay_still_refuses_a_deactivated_user(as_user, host, controller):
    meeting = make_meeting(host=host)
    joiner = make_user()
    client = as_user(joiner)
    key = {"HTTP_IDEMPOTENCY_KEY": str(uuid.uuid4())}
    first = client.post(join_url(meeting.pk), {"region": REGION}, format="json", **key)
    assert first.status_code == 201, first.content
    replay = client.post(join_url(meeting.pk), {"region": REGION}, format="json", **key)
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    User.objects.filter(pk=joiner.pk).update(is_active=False)
    assert_refused_as_inactive(client.post(join_url(meeting.pk), {"region": REGION}, format="json", **key))


@pytest.mark.django_db
def test_a_staff_token_still_reads_its_user_for_fleet_scopes(as_user, operator):
    # Fleet scopes depend on the user's staff flag and permissions, read on every request.
    client = as_user(operator)
    assert client.get("/api/v1/controllers").status_code == 200
    User.objects.filter(pk=operator.pk).update(is_staff=False)
    assert_error(client.get("/api/v1/controllers"), 403, "permission_denied")


@pytest.mark.django_db
def test_other_endpoints_still_refuse_a_deactivated_user_before_answering(as_user, host):
    client = as_user(host)
    meeting = make_meeting(host=host)
    assert client.get(f"/api/v1/meetings/{meeting.pk}").status_code == 200
    User.objects.filter(pk=host.pk).update(is_active=False)
    assert_refused_as_inactive(client.get(f"/api/v1/meetings/{meeting.pk}"))
    assert_refused_as_inactive(client.post("/api/v1/meetings", {"display_name": "x"}, format="json"))
