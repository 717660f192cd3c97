"""The OpenAPI document at /api/schema/: valid OpenAPI 3, covering every API route and method, and enough
for a client that reads nothing else to sign in, create a meeting and join it through a registered MC."""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient
from rest_framework.views import APIView

from controllers.services.registration import controller_heartbeat, controller_register
from tests.factories import make_user

pytestmark = pytest.mark.django_db

HTTP_METHODS = ("get", "post", "put", "patch", "delete")


@pytest.fixture
def schema(api):
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def api_routes():
    """(OpenAPI path, methods) of every DRF view in the URLconf."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                view_class = getattr(pattern.callback, "cls", None)
                if view_class and issubclass(view_class, APIView):
                    yield prefix + str(pattern.pattern), view_class

    for route, view_class in walk(get_resolver().url_patterns):
        if route.startswith("api/schema") or route.startswith("api/docs"):
            continue
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        yield path, {method for method in HTTP_METHODS if hasattr(view_class, method)}


def test_the_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)  # drf-spectacular's bundled OpenAPI 3 JSON schema; raises on any violation


def test_every_route_and_method_is_documented(schema):
    routes = dict(api_routes())
    assert len(routes) >= 15
    for path, methods in routes.items():
        assert path in schema["paths"], path
        assert set(schema["paths"][path]) - {"parameters"} == methods, path


def test_operations_document_their_errors_and_security(schema):
    error_ref = "#/components/schemas/ErrorResponse"
    assert {"bearerAuth", "apiKeyAuth"} <= set(schema["components"]["securitySchemes"])
    operation_ids = set()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            operation_ids.add(operation["operationId"])
            public = path in {"/health", "/ready", "/api/v1/auth/login"} or path.endswith("/guest-token")
            if public:
                assert operation.get("security") in ([], [{}], None) or {} in operation["security"], path
            else:
                names = {name for requirement in operation["security"] for name in requirement}
                assert {"bearerAuth"} <= names, (path, method)
                assert "401" in operation["responses"], (path, method)
            errors = [code for code in operation["responses"] if code.startswith(("4", "5"))]
            for code in errors:
                if path != "/ready":
                    content = operation["responses"][code]["content"]["application/json"]["schema"]
                    assert content == {"$ref": error_ref}, (path, method, code)
            if method == "post" and path != "/api/v1/auth/login":
                headers = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
                assert "Idempotency-Key" in headers, path
    assert "meetings_join" in operation_ids
    join = schema["paths"]["/api/v1/meetings/{meeting_ref}/join"]["post"]
    assert {"201", "409", "410", "429", "503"} <= set(join["responses"])


def _operation(schema, operation_id):
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            if operation.get("operationId") == operation_id:
                return method, path
    raise AssertionError(operation_id)


def test_a_client_reading_only_the_schema_creates_and_joins_a_meeting(schema, settings):
    # A registered MC that has sent its first good heartbeat, as over gRPC.
    controller_register(controller_id="mc-e2e", region=settings.DEFAULT_REGION, grpc_endpoint="mc-e2e:50052",
                        webtransport_endpoint="https://mc-e2e:4433", max_meetings=10, max_participants=100)
    controller_heartbeat(controller_id="mc-e2e", reported="healthy", current_meetings=0, current_participants=0)
    user = make_user(email="e2e@example.test")

    client = APIClient()

    def call(operation_id, body=None, **path_args):
        method, path = _operation(schema, operation_id)
        return getattr(client, method)(path.format(**path_args), body, format="json")

    token = call("auth_login", {"email": user.email, "password": "correct-horse-battery"}).json()["access_token"]
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    meeting = call("meetings_create", {"display_name": "From the schema"}).json()
    found = call("meetings_retrieve", meeting_ref=meeting["meeting_code"]).json()
    assert found["meeting_id"] == meeting["meeting_id"]
    joined = call("meetings_join", {}, meeting_ref=meeting["meeting_code"])
    assert joined.status_code == 201, joined.content
    assert joined.json()["controller_id"] == "mc-e2e"
    assert joined.json()["grpc_endpoint"] == "mc-e2e:50052"


def test_swagger_ui_is_served(api):
    assert api.get("/api/docs/").status_code == 200
