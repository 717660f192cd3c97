"""The OpenAPI document at /api/schema/: valid OpenAPI 3, covering every route under /api/ and /.well-known/
(DRF views and plain Django views alike) and every method, and enough for a client that reads nothing else to
sign in, create a meeting and join it through a registered MC."""

from __future__ import annotations

import re

import pytest
from django.urls import URLPattern, URLResolver, get_resolver
from drf_spectacular.validation import validate_schema
from rest_framework.test import APIClient
from rest_framework.views import APIView

from accounts.api.oauth import FORM_CONTENT_TYPE
from controllers.services.registration import controller_register
from darktower.api.errors import api_not_found
from tests.beats import controller_heartbeat
from tests.factories import make_user

pytestmark = pytest.mark.django_db

HTTP_METHODS = ("get", "post", "put", "patch", "delete")
# Plain Django views that speak RFC formats rather than the API's (accounts.api.oauth).
RFC_PATHS = {"/api/v1/auth/service/token", "/.well-known/jwks.json"}


@pytest.fixture
def schema(api):
    response = api.get("/api/schema/", {"format": "json"})
    assert response.status_code == 200
    return response.json()


def api_routes():
    """(OpenAPI path, methods) of every URL pattern under /api/ and /.well-known/ and of every DRF view,
    whatever kind of view serves it; only the schema, its UI and the JSON 404 catch-all are left out."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern):
                yield prefix + str(pattern.pattern), pattern.callback

    for route, callback in walk(get_resolver().url_patterns):
        if route.startswith(("api/schema", "api/docs")) or callback is api_not_found:
            continue
        view_class = getattr(callback, "view_class", None)
        is_drf = view_class is not None and issubclass(view_class, APIView)
        if not (is_drf or route.startswith(("api/", ".well-known/"))):
            continue
        # A function view here would be undocumented: it fails the coverage test below on purpose.
        assert view_class is not None, f"{route} is not a class-based view"
        path = "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)
        allowed = set(view_class.http_method_names)
        yield path, {method for method in HTTP_METHODS if method in allowed and hasattr(view_class, method)}


def test_the_schema_is_valid_openapi_3(schema):
    assert schema["openapi"].startswith("3.")
    validate_schema(schema)  # drf-spectacular's bundled OpenAPI 3 JSON schema; raises on any violation


def test_every_route_and_method_is_documented(schema):
    routes = dict(api_routes())
    assert len(routes) >= 15
    assert set(routes) >= RFC_PATHS
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
            if path in RFC_PATHS:
                continue  # their own shapes: test_the_oauth_token_endpoint_and_jwks_are_documented_as_rfcs
            public = path in {"/health", "/ready", "/api/v1/auth/login", "/api/v1/shared-recordings/{token}"} or (
                path.endswith("/guest-token") or path.startswith("/api/v1/auth/oidc")
            )
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


def test_the_oauth_token_endpoint_and_jwks_are_documented_as_rfcs(schema):
    token = schema["paths"]["/api/v1/auth/service/token"]["post"]
    assert token["operationId"] == "auth_service_token"
    # Form-encoded (RFC 6749) or the same parameters as a JSON object (Dark Tower's own token manager).
    assert set(token["requestBody"]["content"]) == {FORM_CONTENT_TYPE, "application/json"}
    request = token["requestBody"]["content"][FORM_CONTENT_TYPE]["schema"]["$ref"].rsplit("/", 1)[1]
    assert token["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith(f"/{request}")
    assert schema["components"]["schemas"][request]["properties"]["grant_type"]["enum"] == ["client_credentials"]
    # HTTP Basic or the form's client_id / client_secret (the empty requirement).
    assert token["security"] == [{"clientBasicAuth": []}, {}]
    basic = schema["components"]["securitySchemes"]["clientBasicAuth"]
    assert (basic["type"], basic["scheme"]) == ("http", "basic")
    assert set(token["responses"]) == {"200", "400", "401", "429"}
    for code in ("400", "401", "429"):
        assert token["responses"][code]["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/OAuthError"
        }
    assert "WWW-Authenticate" in token["responses"]["401"]["headers"]
    assert "Retry-After" in token["responses"]["429"]["headers"]
    success = schema["components"]["schemas"]["ServiceTokenResponse"]
    assert set(success["required"]) == {"access_token", "token_type", "expires_in", "scope"}

    jwks = schema["paths"]["/.well-known/jwks.json"]["get"]
    assert jwks["security"] == []
    assert jwks["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/JsonWebKeySet"
    }


def test_the_documented_jwks_shape_is_what_the_endpoint_serves(schema, api):
    keys = api.get("/.well-known/jwks.json").json()["keys"]
    documented = schema["components"]["schemas"]["JsonWebKey"]
    assert keys and all(set(key) == set(documented["required"]) == set(documented["properties"]) for key in keys)


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
