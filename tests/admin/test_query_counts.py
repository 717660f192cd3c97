"""The fleet dashboard's queries do not grow with the fleet: the same count at 10 and 1,000 controllers, for the
changelist (summary included) and for the live JSON endpoint the page polls."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from controllers.models import HealthStatus, MediaHandler, MeetingController
from meetings.models import MeetingAssignment
from tests.factories import make_meeting

pytestmark = pytest.mark.django_db

REGIONS = ("us-east-1", "eu-west-1", "ap-south-1")
STATES = HealthStatus.values
# Session, user, the three summary aggregates, the region filter's index scan, the page's COUNT and SELECT,
# the permission lookups of a group member (user and group permissions, cached per request).
CHANGELIST_QUERIES = 10
LIVE_QUERIES = 5


def _fleet(size: int) -> list[str]:
    controllers = [
        MeetingController(
            controller_id=f"mc-q-{n:05d}", region=REGIONS[n % 3], health_status=STATES[n % len(STATES)],
            endpoint=f"grpc://mc{n}:50052", grpc_endpoint=f"grpc://mc{n}:50052", max_meetings=100,
            current_meetings=n % 100, max_participants=1000, current_participants=n % 1000, version="1.0",
            cpu_usage_percent=50.0, memory_usage_percent=40.0,
        )
        for n in range(size)
    ]
    MeetingController.objects.bulk_create(controllers)
    MediaHandler.objects.bulk_create(
        MediaHandler(handler_id=f"mh-q-{n:05d}", region=REGIONS[n % 3], endpoint="e", max_streams=10,
                     max_bitrate_mbps=100)
        for n in range(size // 10 + 1)
    )
    meeting = make_meeting()
    MeetingAssignment.objects.create(meeting=meeting, meeting_controller=controllers[0], region=REGIONS[0],
                                     assigned_by_gc_id="gc-test")
    return [c.controller_id for c in controllers]


def _changelist_queries(client, user) -> int:
    client.force_login(user)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:controllers_meetingcontroller_changelist"))
    assert response.status_code == 200
    return len(queries)


def _live_queries(client, user, ids: list[str]) -> int:
    client.force_login(user)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:controllers_meetingcontroller_live"), {"ids": ",".join(ids[:100])})
    assert response.status_code == 200
    assert len(response.json()["items"]) == min(100, len(ids))
    return len(queries)


@pytest.mark.parametrize("size", [10, 1000])
def test_changelist_query_count_is_constant(client, viewer_user, size):
    _fleet(size)

    assert _changelist_queries(client, viewer_user) == CHANGELIST_QUERIES


@pytest.mark.parametrize("size", [10, 1000])
def test_live_endpoint_query_count_is_constant(client, viewer_user, size):
    ids = _fleet(size)

    assert _live_queries(client, viewer_user, ids) == LIVE_QUERIES


def test_filtered_and_sorted_changelist_same_count(client, viewer_user):
    _fleet(1000)
    client.force_login(viewer_user)

    with CaptureQueriesContext(connection) as queries:
        response = client.get(
            reverse("admin:controllers_meetingcontroller_changelist"),
            {"region": "eu-west-1", "health_status__exact": "healthy", "o": "8", "q": "mc-q"},
        )

    assert response.status_code == 200
    assert len(queries) == CHANGELIST_QUERIES
