"""The admin's queries do not grow with the data: the fleet dashboard (summary and per-region transition timelines
included) and its live JSON endpoint cost the same at 10 and at 10,000 controllers; every other changelist the
same at a few and at many rows."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from accounts.models import OAuthProvider
from accounts.services.service_tokens import service_credential_create
from audit.models import OutboxEvent
from controllers.models import HealthStatus, HealthTransition
from meetings.models import MeetingAssignment
from tests.factories import make_api_key, make_controller, make_handler, make_meeting, make_recording, make_user

pytestmark = pytest.mark.django_db

REGIONS = ["us-east-1", "eu-west-1", "ap-south-1"]
STATES = HealthStatus.values
# Session, user, the three summary aggregates, the per-region transition timelines, the region filter's index
# scan, the page's COUNT and SELECT, the permission lookups of a group member (user and group permissions,
# cached per request).
CHANGELIST_QUERIES = 11
LIVE_QUERIES = 5
_numbers = itertools.count()

# One INSERT ... SELECT per table: 10,000 controllers in well under a second.
_FLEET_SQL = """
INSERT INTO meeting_controllers (
    controller_id, region, health_status, endpoint, grpc_endpoint, max_meetings, current_meetings,
    max_participants, current_participants, version, cpu_usage_percent, memory_usage_percent, drain_deadline,
    last_heartbeat_at
)
SELECT format('mc-q-%%s', lpad(n::text, 5, '0')), (%(regions)s::text[])[1 + n %% 3],
       (%(states)s::text[])[1 + n %% cardinality(%(states)s::text[])],
       format('grpc://mc%%s:50052', n), format('grpc://mc%%s:50052', n), 100, n %% 100, 1000, n %% 1000, '1.0',
       50.0, 40.0,
       CASE WHEN (%(states)s::text[])[1 + n %% cardinality(%(states)s::text[])] = 'draining'
            THEN now() + interval '1 hour' END,
       now() - make_interval(secs => n %% 60)
FROM generate_series(0, %(size)s - 1) AS n;

INSERT INTO media_handlers (handler_id, region, endpoint, max_streams, max_bitrate_mbps)
SELECT format('mh-q-%%s', n), (%(regions)s::text[])[1 + n %% 3], 'e', 10, 100
FROM generate_series(0, %(size)s / 10) AS n;

INSERT INTO controller_health_transitions (component_type, component_id, region, from_status, to_status, reason,
                                           actor_type, created_at)
SELECT 'controller', format('mc-q-%%s', lpad(n::text, 5, '0')), (%(regions)s::text[])[1 + n %% 3], 'healthy',
       'unhealthy', 'stale', 'system', now() - make_interval(secs => n %% 3000)
FROM generate_series(0, %(size)s - 1) AS n;
"""


def _fleet(size: int) -> list[str]:
    with connection.cursor() as cursor:
        cursor.execute(_FLEET_SQL, {"regions": REGIONS, "states": STATES, "size": size})
    MeetingAssignment.objects.create(meeting=make_meeting(), meeting_controller_id="mc-q-00000", region=REGIONS[0],
                                     assigned_by_gc_id="gc-test")
    return [f"mc-q-{n:05d}" for n in range(size)]


def _changelist_queries(client, user) -> int:
    client.force_login(user)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:controllers_meetingcontroller_changelist"))
    assert response.status_code == 200
    assert response.content.decode().count('class="dt-transition"') <= 3 * 50  # bounded per region
    return len(queries)


def _live_queries(client, user, ids: list[str]) -> int:
    client.force_login(user)
    with CaptureQueriesContext(connection) as queries:
        response = client.get(reverse("admin:controllers_meetingcontroller_live"), {"ids": ",".join(ids[:100])})
    assert response.status_code == 200
    assert len(response.json()["items"]) == min(100, len(ids))
    return len(queries)


@pytest.mark.parametrize("size", [10, 10_000])
def test_changelist_query_count_is_constant(client, viewer_user, size):
    _fleet(size)

    assert _changelist_queries(client, viewer_user) == CHANGELIST_QUERIES


@pytest.mark.parametrize("size", [10, 10_000])
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


def _users(n: int) -> None:
    for _ in range(n):
        make_user()


def _meetings(n: int) -> None:
    host = make_user()
    for _ in range(n):
        make_meeting(host=host)


def _assignments(n: int) -> None:
    controller = make_controller()
    for _ in range(n):
        MeetingAssignment.objects.create(meeting=make_meeting(host=make_user()), meeting_controller=controller,
                                         region=controller.region, assigned_by_gc_id="gc-test")


def _recordings(n: int) -> None:
    for _ in range(n):
        make_recording(meeting=make_meeting(host=make_user()))


def _api_keys(n: int) -> None:
    for _ in range(n):
        make_api_key(user=make_user())


def _outbox(n: int) -> None:
    OutboxEvent.objects.bulk_create(
        OutboxEvent(aggregate_type="meeting", aggregate_id=f"m{i}", event_type="meeting_assigned",
                    failed_at=timezone.now() if i % 2 else None)
        for i in range(n)
    )


def _handlers(n: int) -> None:
    for i in range(n):
        make_handler(region=REGIONS[i % 3])


def _service_credentials(n: int) -> None:
    for i in range(n):
        service_credential_create(name=f"fleet {i}", scopes=["mc:register"])


def _oauth_links(n: int) -> None:
    for _ in range(n):
        OAuthProvider.objects.create(user=make_user(), provider="github", provider_user_id=f"gh-{next(_numbers)}")


def _transitions(n: int) -> None:
    HealthTransition.objects.bulk_create(
        HealthTransition(component_type="controller", component_id=f"mc-{i}", region=REGIONS[i % 3],
                         from_status="healthy", to_status="unhealthy", reason="stale", actor_type="system")
        for i in range(n)
    )


def _periodic_tasks(n: int) -> None:
    for _ in range(n):
        number = next(_numbers)
        every = IntervalSchedule.objects.create(every=10 + number, period=IntervalSchedule.SECONDS)
        PeriodicTask.objects.create(name=f"query count task {number}", task="controllers.sweep_stale", interval=every)


@pytest.mark.parametrize(
    ("url_name", "add_rows"),
    [
        ("admin:accounts_user_changelist", _users),
        ("admin:meetings_meeting_changelist", _meetings),
        ("admin:meetings_meetingassignment_changelist", _assignments),
        ("admin:meetings_recording_changelist", _recordings),
        ("admin:accounts_apikey_changelist", _api_keys),
        ("admin:audit_outboxevent_changelist", _outbox),
        ("admin:controllers_mediahandler_changelist", _handlers),
        ("admin:accounts_servicecredential_changelist", _service_credentials),
        ("admin:accounts_oauthprovider_changelist", _oauth_links),
        ("admin:controllers_healthtransition_changelist", _transitions),
        ("admin:django_celery_beat_periodictask_changelist", _periodic_tasks),
    ],
)
def test_other_changelists_query_count_is_constant(
    client, superuser, django_assert_num_queries, url_name: str, add_rows: Callable[[int], None]
):
    client.force_login(superuser)
    add_rows(2)
    with CaptureQueriesContext(connection) as few:
        assert client.get(reverse(url_name)).status_code == 200

    add_rows(25)

    with django_assert_num_queries(len(few)):
        response = client.get(reverse(url_name))
    assert response.status_code == 200
    rows = response.content.decode().split('id="result_list"')[1].split("</table>")[0].count("<tr") - 1
    assert rows >= 27
