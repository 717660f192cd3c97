"""The fleet for operators: GET /api/v1/controllers and /api/v1/media-handlers, filterable by region and
health."""

from __future__ import annotations

import pytest

from tests.factories import make_controller, make_handler
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def fleet():
    make_controller(controller_id="mc-eu-1", region="eu-west-1", current_meetings=25, max_meetings=100)
    make_controller(controller_id="mc-eu-2", region="eu-west-1", health="degraded")
    make_controller(controller_id="mc-us-1", region="us-east-1", health="unhealthy")
    make_controller(controller_id="mc-us-2", region="us-east-1", health="draining")
    make_handler(handler_id="mh-eu-1", region="eu-west-1")
    make_handler(handler_id="mh-us-1", region="us-east-1", health="unhealthy")


def ids(response, key):
    assert response.status_code == 200, response.content
    return [item[key] for item in response.json()["results"]]


def test_controllers_listing(as_user, operator, fleet, django_assert_num_queries):
    client = as_user(operator)
    # user, its permissions and its groups' (the fleet scopes follow the admin's permissions), count, page
    with django_assert_num_queries(5):
        response = client.get("/api/v1/controllers")
    assert ids(response, "controller_id") == ["mc-eu-1", "mc-eu-2", "mc-us-1", "mc-us-2"]
    first = response.json()["results"][0]
    assert first["load_ratio"] == 0.25 and first["grpc_endpoint"] and first["health_status"] == "healthy"
    assert "metadata" not in first


def test_controllers_filters(as_user, operator, fleet):
    client = as_user(operator)
    assert ids(client.get("/api/v1/controllers", {"region": "us-east-1"}), "controller_id") == ["mc-us-1", "mc-us-2"]
    assert ids(client.get("/api/v1/controllers", {"health_status": "degraded"}), "controller_id") == ["mc-eu-2"]
    both = client.get("/api/v1/controllers?health_status=healthy&health_status=draining")
    assert ids(both, "controller_id") == ["mc-eu-1", "mc-us-2"]
    error = assert_error(client.get("/api/v1/controllers", {"health_status": "sleepy"}), 400, "invalid")
    assert "health_status" in error["fields"]


def test_media_handlers_listing_and_filters(as_user, operator, fleet, django_assert_num_queries):
    client = as_user(operator)
    with django_assert_num_queries(5):  # as above
        response = client.get("/api/v1/media-handlers")
    assert ids(response, "handler_id") == ["mh-eu-1", "mh-us-1"]
    assert response.json()["results"][0]["supported_codecs"] == ["VP9", "AV1", "H264", "Opus"]
    assert ids(client.get("/api/v1/media-handlers", {"region": "eu-west-1"}), "handler_id") == ["mh-eu-1"]
    assert ids(client.get("/api/v1/media-handlers", {"health_status": "unhealthy"}), "handler_id") == ["mh-us-1"]


def test_the_fleet_is_for_operators(as_user, as_key, host, operator, fleet):
    assert_error(as_user(host).get("/api/v1/controllers"), 403, "permission_denied")
    assert as_key(operator, ["controllers:read"]).get("/api/v1/controllers").status_code == 200
    assert_error(as_key(operator, ["meetings:read"]).get("/api/v1/media-handlers"), 403, "permission_denied")
