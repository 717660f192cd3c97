"""Drain and undrain over REST (scope controllers:write), through controllers.services.operations."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import AuditLog
from controllers.models import MeetingController
from tests.factories import make_controller, make_meeting
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

REGION = "us-east-1"


def drain_url(controller_id):
    return f"/api/v1/controllers/{controller_id}/drain"


def undrain_url(controller_id):
    return f"/api/v1/controllers/{controller_id}/undrain"


def status_of(controller_id):
    return MeetingController.objects.get(pk=controller_id).health_status


def test_drain_stops_new_meetings_and_undrain_returns_to_pending(as_user, operator, host):
    make_controller(controller_id="mc-a", region=REGION)
    make_controller(controller_id="mc-b", region=REGION, current_meetings=90)
    client = as_user(operator)
    response = client.post(drain_url("mc-a"), {"deadline_seconds": 600}, format="json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["controller_id"] == "mc-a" and body["health_status"] == "draining"
    deadline = MeetingController.objects.get(pk="mc-a").drain_deadline
    assert abs(deadline - (timezone.now() + timedelta(seconds=600))) < timedelta(seconds=30)
    assert AuditLog.objects.filter(target_id="mc-a", actor_user_id=operator.pk).exists()
    # The drained MC takes no new meeting, even though it is the least loaded.
    for _ in range(3):
        meeting = make_meeting(host=host)
        joined = as_user(host).post(f"/api/v1/meetings/{meeting.pk}/join", format="json").json()
        assert joined["controller_id"] == "mc-b"

    response = client.post(undrain_url("mc-a"), format="json")
    assert response.status_code == 200, response.content
    assert response.json()["health_status"] == "pending" == status_of("mc-a")


def test_drain_defaults_and_target(as_user, operator):
    make_controller(controller_id="mc-a", region=REGION)
    make_controller(controller_id="mc-b", region=REGION)
    response = as_user(operator).post(drain_url("mc-a"), {"target_controller_id": "mc-b"}, format="json")
    assert response.status_code == 200, response.content
    row = MeetingController.objects.get(pk="mc-a")
    assert row.drain_target_controller_id == "mc-b"
    expected = timezone.now() + timedelta(seconds=settings.DRAIN_DEFAULT_DEADLINE_SECONDS)
    assert abs(row.drain_deadline - expected) < timedelta(seconds=30)
    assert response.json()["drain_target_controller_id"] == "mc-b"


def test_drain_and_undrain_errors(as_user, operator):
    make_controller(controller_id="mc-a", region=REGION)
    client = as_user(operator)
    assert_error(client.post(drain_url("mc-nope"), format="json"), 404, "not_found")
    assert_error(client.post(undrain_url("mc-nope"), format="json"), 404, "not_found")
    assert_error(client.post(undrain_url("mc-a"), format="json"), 409, "conflict")  # not draining
    assert_error(client.post(drain_url("mc-a"), {"target_controller_id": "mc-ghost"}, format="json"),
                 404, "not_found")
    for payload in ({"deadline_seconds": -1}, {"deadline_seconds": "60"}, {"deadline_seconds": 10**9},
                    {"force": True}, {"target_controller_id": 5}):
        error = assert_error(client.post(drain_url("mc-a"), payload, format="json"), 400, "invalid")
        assert error["fields"]
    assert_error(client.post(drain_url("mc-a"), {"target_controller_id": "mc-a"}, format="json"), 400, "invalid")
    assert status_of("mc-a") == "healthy"


def test_drain_needs_controllers_write(as_user, as_key, host, operator):
    make_controller(controller_id="mc-a", region=REGION)
    assert_error(as_user(host).post(drain_url("mc-a"), format="json"), 403, "permission_denied")
    assert_error(as_key(operator, ["controllers:read"]).post(drain_url("mc-a"), format="json"),
                 403, "permission_denied")
    assert_error(as_user(operator, scopes=["controllers:read"]).post(undrain_url("mc-a"), format="json"),
                 403, "permission_denied")
    assert status_of("mc-a") == "healthy"
    response = as_key(operator, ["controllers:write"]).post(drain_url("mc-a"), format="json")
    assert response.status_code == 200 and status_of("mc-a") == "draining"
