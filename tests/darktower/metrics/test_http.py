"""The HTTP middleware (routes, never raw paths) and GET /metrics, through the project's own settings.MIDDLEWARE
and URLconf (darktower/urls.py)."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import timedelta

import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import OutboxEvent
from controllers.models import HealthStatus
from darktower.metrics import REGISTRY
from tests.factories import make_controller, make_handler

pytestmark = pytest.mark.django_db
PARTICIPANTS = "api/v1/meetings/<uuid:meeting_id>/participants"


def requests_seen(method: str, route: str, status: int) -> float:
    value = REGISTRY.get_sample_value(
        "darktower_http_requests_total", {"method": method, "route": route, "status": str(status)}
    )
    return value or 0.0


def latency_count(method: str, route: str) -> float:
    return REGISTRY.get_sample_value(
        "darktower_http_request_duration_seconds_count", {"method": method, "route": route}
    ) or 0.0


def test_the_middleware_is_installed_first():
    assert settings.MIDDLEWARE[0] == "darktower.metrics.MetricsMiddleware"


def test_counts_by_route_pattern_not_path(client):
    before = requests_seen("GET", PARTICIPANTS, 401)
    before_latency = latency_count("GET", PARTICIPANTS)
    paths = [f"/api/v1/meetings/{uuid.uuid4()}/participants" for _ in range(3)]

    for path in paths:
        assert client.get(path).status_code == 401

    assert requests_seen("GET", PARTICIPANTS, 401) == before + 3
    assert latency_count("GET", PARTICIPANTS) == before_latency + 3
    assert REGISTRY.get_sample_value(
        "darktower_http_requests_total", {"method": "GET", "route": paths[0].lstrip("/"), "status": "401"}
    ) is None


def test_a_route_of_the_admin_include_reports_the_whole_pattern(client):
    before = requests_seen("GET", "admin/login/", 200)

    assert client.get("/admin/login/").status_code == 200

    assert requests_seen("GET", "admin/login/", 200) == before + 1


def test_unmatched_paths_share_one_series(client):
    before = requests_seen("GET", "<unmatched>", 404)

    assert client.get("/no/such/page/123").status_code == 404
    assert client.get("/another-missing-page").status_code == 404

    assert requests_seen("GET", "<unmatched>", 404) == before + 2


@pytest.mark.urls("tests.darktower.metrics.urls")
def test_a_view_that_raises_is_counted_as_500(client):
    client.raise_request_exception = False
    before = requests_seen("POST", "test-boom", 500)

    assert client.post("/test-boom").status_code == 500

    assert requests_seen("POST", "test-boom", 500) == before + 1


def test_unknown_methods_are_folded(client):
    before = requests_seen("other", "health", 405)

    assert client.generic("PURGE", "/health").status_code == 405

    assert requests_seen("other", "health", 405) == before + 1


def test_metrics_exposition(client):
    make_controller(region="us-east-1")
    make_controller(region="us-east-1")
    make_controller(region="eu-west-1", health=HealthStatus.DRAINING)
    make_handler(region="eu-west-1", health=HealthStatus.UNHEALTHY)
    event = OutboxEvent.objects.create(aggregate_type="controller", aggregate_id="mc-1", event_type="x")
    OutboxEvent.objects.filter(pk=event.pk).update(created_at=timezone.now() - timedelta(seconds=90))
    OutboxEvent.objects.create(
        aggregate_type="controller", aggregate_id="mc-2", event_type="x", processed_at=timezone.now()
    )
    client.get("/health")

    response = client.get("/metrics")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain; version=")
    text = response.content.decode()
    lines = set(text.splitlines())
    assert 'darktower_http_requests_total{method="GET",route="health",status="200"}' in text
    assert "darktower_metrics_database_up 1.0" in lines
    assert 'darktower_fleet_members{health="healthy",kind="meeting_controller",region="us-east-1"} 2.0' in lines
    assert 'darktower_fleet_members{health="draining",kind="meeting_controller",region="eu-west-1"} 1.0' in lines
    assert 'darktower_fleet_members{health="unhealthy",kind="media_handler",region="eu-west-1"} 1.0' in lines
    assert "darktower_outbox_pending 1.0" in lines
    lag = next(line for line in lines if line.startswith("darktower_outbox_lag_seconds "))
    assert 89.0 <= float(lag.split()[1]) < 120.0
    for family, kind in (
        ("darktower_grpc_requests_total", "counter"), ("darktower_grpc_request_duration_seconds", "histogram"),
        ("darktower_assignments_total", "counter"), ("darktower_sweep_duration_seconds", "histogram"),
        ("darktower_sweep_marked_total", "counter"), ("darktower_rate_limit_rejections_total", "counter"),
        ("darktower_token_validations_total", "counter"),
    ):
        assert f"# TYPE {family} {kind}" in lines
    assert "_created" not in text


def test_outbox_lag_is_zero_without_pending_events(client):
    text = client.get("/metrics").content.decode()

    assert "darktower_outbox_lag_seconds 0.0" in text.splitlines()
    assert "darktower_outbox_pending 0.0" in text.splitlines()


def test_metrics_refuses_writes(client):
    assert client.post("/metrics").status_code == 405


def test_scrapes_are_counted_under_their_own_route(client):
    before = requests_seen("GET", "metrics", 200)

    client.get("/metrics")

    assert requests_seen("GET", "metrics", 200) == before + 1


def test_only_allowed_networks_may_scrape(client, settings):
    settings.METRICS_ALLOWED_NETWORKS_PARSED = (ipaddress.ip_network("10.20.0.0/16"),)

    assert client.get("/metrics", REMOTE_ADDR="10.20.3.4").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="10.21.3.4").status_code == 404
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 404
    assert client.get("/metrics", REMOTE_ADDR="not-an-address").status_code == 404


def test_by_default_only_loopback_may_scrape(client):
    assert client.get("/metrics", REMOTE_ADDR="::1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="192.0.2.10").status_code == 404
