"""The OAuth 2.0 token endpoint for services and the JWKS that lets anyone verify our tokens.

These are plain Django views, not DRF ones, on purpose: a stock OAuth 2.0 client must be able to use the
token endpoint unchanged, so it speaks RFC 6749 exactly (form-encoded request, section 5.1 success body,
section 5.2 error body `{"error": "invalid_client", "error_description": ...}`) instead of the rest of the
API's JSON bodies and `{"error": {"code", "message", "fields"}}` shape. Dark Tower's own services send the same
parameters as a JSON object instead (their token manager's request); both bodies go through the same checks.
drf-spectacular does not see plain views, so `openapi_add_plain_views` (a schema postprocessing hook) documents
both in /api/schema/.
"""

from __future__ import annotations

import base64
import binascii
import inspect
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote_plus

from django.http import HttpRequest, JsonResponse
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.csrf import csrf_exempt

from accounts.services.service_tokens import CLIENT_ID_PATTERN, InvalidClient, InvalidScope, service_token_issue
from accounts.signing import public_jwk, signing_key_active, signing_keys_published
from darktower.api.ratelimit import ratelimit_hit, token_limits
from darktower.api.views import client_ip, peer_ip
from darktower.errors import Throttled

GRANT_TYPE = "client_credentials"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"
JSON_CONTENT_TYPE = "application/json"
# RFC 6750 / RFC 7617: the scheme a client must use, named on every 401.
WWW_AUTHENTICATE = 'Basic realm="darktower-token", charset="UTF-8"'
NO_STORE = {"Cache-Control": "no-store", "Pragma": "no-cache"}
_TOKEN_PARAMETERS = ("grant_type", "scope", "client_id", "client_secret")
# Published keys change only by rotation; a verifier that meets an unknown kid refetches anyway.
JWKS_MAX_AGE_SECONDS = 60


class OAuthError(Exception):
    """An RFC 6749 section 5.2 error response."""

    def __init__(self, error: str, description: str, *, status: int = 400, headers: dict[str, str] | None = None):
        super().__init__(description)
        self.error = error
        self.description = description
        self.status = status
        self.headers = headers or {}


def _invalid_client(description: str = "Client authentication failed.") -> OAuthError:
    return OAuthError("invalid_client", description, status=401, headers={"WWW-Authenticate": WWW_AUTHENTICATE})


def _oauth_response(body: dict[str, Any], *, status: int = 200, headers: dict[str, str] | None = None) -> JsonResponse:
    response = JsonResponse(body, status=status)
    for name, value in {**NO_STORE, **(headers or {})}.items():
        response[name] = value
    return response


@dataclass(frozen=True)
class _ClientAuth:
    client_id: str
    client_secret: str = field(repr=False)  # never in a log line or a traceback


def _parameters(request: HttpRequest) -> dict[str, str]:
    """The token request's parameters, from a form-encoded body (RFC 6749) or a JSON object of strings (Dark
    Tower's services). Section 3.1: none may repeat, and one sent empty counts as omitted. Section 2.3.1:
    credentials never travel in the URI."""
    if "client_secret" in request.GET:
        raise OAuthError("invalid_request", "Client credentials must not be sent in the request URI.")
    if request.content_type == JSON_CONTENT_TYPE:
        return _json_parameters(request)
    if request.content_type != FORM_CONTENT_TYPE:
        raise OAuthError("invalid_request", f"The request body must be {FORM_CONTENT_TYPE} or {JSON_CONTENT_TYPE}.")
    parameters: dict[str, str] = {}
    for name in _TOKEN_PARAMETERS:
        values = request.POST.getlist(name)
        if len(values) > 1:
            raise OAuthError("invalid_request", f"The {name} parameter is repeated.")
        if values and values[0] != "":
            parameters[name] = values[0]
    return parameters


def _no_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    names = [name for name, _ in pairs]
    for name in _TOKEN_PARAMETERS:
        if names.count(name) > 1:
            raise OAuthError("invalid_request", f"The {name} parameter is repeated.")
    return dict(pairs)


def _json_parameters(request: HttpRequest) -> dict[str, str]:
    """A JSON object whose token parameters are strings; other members are ignored, as unknown form
    parameters are (section 3.2)."""
    try:
        body = json.loads(request.body, object_pairs_hook=_no_duplicate_keys)
    except (ValueError, RecursionError):
        raise OAuthError("invalid_request", "The request body is not valid JSON.") from None
    if not isinstance(body, dict):
        raise OAuthError("invalid_request", "The request body must be a JSON object.")
    parameters: dict[str, str] = {}
    for name in _TOKEN_PARAMETERS:
        value = body.get(name)
        if value is None or value == "":
            continue
        if not isinstance(value, str):
            raise OAuthError("invalid_request", f"The {name} parameter must be a string.")
        parameters[name] = value
    return parameters


def _basic_credentials(header: str) -> _ClientAuth:
    """RFC 6749 section 2.3.1: HTTP Basic over the form-urlencoded client id and secret."""
    scheme, _, value = header.strip().partition(" ")
    if scheme.lower() != "basic":
        raise _invalid_client("Use HTTP Basic or the client_id and client_secret form fields.")
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        raise _invalid_client("Malformed Basic credentials.") from None
    raw_id, separator, raw_secret = decoded.partition(":")
    if not separator:
        raise _invalid_client("Malformed Basic credentials.")
    return _ClientAuth(client_id=unquote_plus(raw_id), client_secret=unquote_plus(raw_secret))


def _client_auth(request: HttpRequest, parameters: dict[str, str]) -> _ClientAuth | None:
    """One client authentication method per request (section 2.3): Basic, or the form fields; a client_id
    field beside Basic is tolerated when it names the same client (some libraries send both)."""
    header = request.META.get("HTTP_AUTHORIZATION")
    if header:
        if "client_secret" in parameters:
            raise OAuthError("invalid_request", "Use one client authentication method, not both.")
        auth = _basic_credentials(header)
        if "client_id" in parameters and parameters["client_id"] != auth.client_id:
            raise OAuthError("invalid_request", "The client_id field does not match the Basic credentials.")
        return auth
    if "client_id" in parameters and "client_secret" in parameters:
        return _ClientAuth(client_id=parameters["client_id"], client_secret=parameters["client_secret"])
    return None


@method_decorator(csrf_exempt, name="dispatch")
class ServiceTokenView(View):
    """POST /api/v1/auth/service/token: the client-credentials grant (RFC 6749 section 4.4).

    Request: `grant_type=client_credentials` and an optional space-delimited `scope`, form-encoded or as a JSON
    object of strings; the client authenticates with HTTP Basic or with the `client_id` and `client_secret` fields.
    Response (section 5.1): `{"access_token", "token_type": "Bearer", "expires_in", "scope"}`; errors (section 5.2):
    `invalid_request`, `unsupported_grant_type` and `invalid_scope` with 400, `invalid_client` with 401 and
    `WWW-Authenticate: Basic`. `invalid_grant` and `unauthorized_client` cannot arise: with this grant the client's
    own credentials are the grant (their failures are invalid_client) and every credential may use it. Rate limited
    per client and per address (RATE_LIMIT_TOKEN_PER_*): 429 `slow_down` with Retry-After. Every response carries
    `Cache-Control: no-store` and `Pragma: no-cache`.

    This endpoint deliberately answers in RFC 6749's error shape, not the API's `{"error": {...}}`.
    """

    http_method_names = ["post", "options"]

    def post(self, request: HttpRequest) -> JsonResponse:
        try:
            return self._issue(request)
        except OAuthError as exc:
            return _oauth_response(
                {"error": exc.error, "error_description": exc.description}, status=exc.status, headers=exc.headers
            )
        except Throttled as exc:
            return _oauth_response(
                {"error": "slow_down", "error_description": "Too many token requests; retry later."},
                status=429, headers={"Retry-After": str(max(1, exc.retry_after_seconds))},
            )

    def _issue(self, request: HttpRequest) -> JsonResponse:
        parameters = _parameters(request)
        auth = _client_auth(request, parameters)
        ip_address = client_ip(request)
        # Only ids we could have issued get a per-client counter: anything else would let a caller mint keys.
        known_shape = auth is not None and CLIENT_ID_PATTERN.fullmatch(auth.client_id) is not None
        limits = token_limits(
            client_id=auth.client_id if auth is not None and known_shape else "", ip_address=ip_address
        )
        if not known_shape:
            limits = [limit for limit in limits if not limit.identifier.startswith("client:")]
        ratelimit_hit(limits)
        if auth is None:
            raise _invalid_client("Client authentication is required.")
        grant_type = parameters.get("grant_type")
        if grant_type is None:
            raise OAuthError("invalid_request", "The grant_type parameter is required.")
        if grant_type != GRANT_TYPE:
            raise OAuthError("unsupported_grant_type", f"Only {GRANT_TYPE} is supported here.")
        try:
            issued = service_token_issue(
                client_id=auth.client_id, client_secret=auth.client_secret, scope=parameters.get("scope"),
                ip_address=peer_ip(request),
            )
        except InvalidClient:
            raise _invalid_client() from None
        except InvalidScope as exc:
            raise OAuthError("invalid_scope", exc.message) from None
        return _oauth_response(
            {"access_token": issued.token, "token_type": "Bearer", "expires_in": issued.expires_in,
             "scope": issued.scope}
        )


class JwksView(View):
    """GET /.well-known/jwks.json: the public keys of every token we sign (RFC 7517, OKP / Ed25519 keys).

    The active key and retired keys whose tokens may still be alive. Cacheable for a short while; a verifier
    that meets a token whose kid it does not know should refetch (PyJWKClient does).
    """

    http_method_names = ["get", "head", "options"]

    def get(self, request: HttpRequest) -> JsonResponse:
        # A fresh database has no key until the first token; publish one from the start.
        signing_key_active()
        response = JsonResponse({"keys": [public_jwk(key) for key in signing_keys_published()]})
        response["Cache-Control"] = f"public, max-age={JWKS_MAX_AGE_SECONDS}"
        return response


# --- OpenAPI ------------------------------------------------------------------------------------------------

_OAUTH_ERRORS = ["invalid_request", "invalid_client", "invalid_scope", "unsupported_grant_type", "slow_down"]


def _json(schema_name: str) -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema_name}"}}}


def _header(description: str) -> dict[str, Any]:
    return {"schema": {"type": "string"}, "description": description}


def _oauth_error(description: str, headers: dict[str, Any] | None = None) -> dict[str, Any]:
    response: dict[str, Any] = {"description": description, "content": _json("OAuthError")}
    if headers:
        response["headers"] = headers
    return response


OPENAPI_SCHEMAS: dict[str, Any] = {
    "ServiceTokenRequest": {
        "type": "object",
        "required": ["grant_type"],
        "properties": {
            "grant_type": {"type": "string", "enum": [GRANT_TYPE]},
            "scope": {"type": "string", "description": "Space-delimited scopes; default: all of the client's."},
            "client_id": {"type": "string", "description": "With client_secret, instead of HTTP Basic."},
            "client_secret": {"type": "string", "description": "With client_id, instead of HTTP Basic."},
        },
    },
    "ServiceTokenResponse": {
        "type": "object",
        "required": ["access_token", "token_type", "expires_in", "scope"],
        "properties": {
            "access_token": {"type": "string", "description": "EdDSA JWT, audience of the service tokens."},
            "token_type": {"type": "string", "enum": ["Bearer"]},
            "expires_in": {"type": "integer", "description": "Seconds until the token expires."},
            "scope": {"type": "string", "description": "Space-delimited scopes the token carries."},
        },
    },
    "OAuthError": {
        "type": "object",
        "description": "RFC 6749 section 5.2 error (not the rest of the API's error shape).",
        "required": ["error"],
        "properties": {
            "error": {"type": "string", "enum": _OAUTH_ERRORS},
            "error_description": {"type": "string"},
        },
    },
    "JsonWebKeySet": {
        "type": "object",
        "required": ["keys"],
        "properties": {"keys": {"type": "array", "items": {"$ref": "#/components/schemas/JsonWebKey"}}},
    },
    "JsonWebKey": {
        "type": "object",
        "description": "RFC 8037 public key (OKP, Ed25519).",
        "required": ["kty", "crv", "x", "kid", "alg", "use"],
        "properties": {
            "kty": {"type": "string", "enum": ["OKP"]},
            "crv": {"type": "string", "enum": ["Ed25519"]},
            "x": {"type": "string", "description": "The public key, base64url."},
            "kid": {"type": "string"},
            "alg": {"type": "string", "enum": ["EdDSA"]},
            "use": {"type": "string", "enum": ["sig"]},
        },
    },
}

OPENAPI_PATHS: dict[str, Any] = {
    "/api/v1/auth/service/token": {
        "post": {
            "operationId": "auth_service_token",
            "tags": ["auth"],
            "summary": "Service access token: OAuth 2.0 client credentials grant (RFC 6749 section 4.4)",
            "description": inspect.cleandoc(ServiceTokenView.__doc__ or ""),
            # HTTP Basic, or client_id and client_secret in the body (the empty requirement).
            "security": [{"clientBasicAuth": []}, {}],
            "requestBody": {
                "required": True,
                "content": {
                    FORM_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/ServiceTokenRequest"}},
                    JSON_CONTENT_TYPE: {"schema": {"$ref": "#/components/schemas/ServiceTokenRequest"}},
                },
            },
            "responses": {
                "200": {
                    "description": "RFC 6749 section 5.1 access token response.",
                    "content": _json("ServiceTokenResponse"),
                    "headers": {"Cache-Control": _header("no-store")},
                },
                "400": _oauth_error("invalid_request, unsupported_grant_type or invalid_scope."),
                "401": _oauth_error("invalid_client.", {"WWW-Authenticate": _header(WWW_AUTHENTICATE)}),
                "429": _oauth_error(
                    "slow_down: rate limited per client and per address.", {"Retry-After": _header("Seconds to wait.")}
                ),
            },
        }
    },
    "/.well-known/jwks.json": {
        "get": {
            "operationId": "jwks",
            "tags": ["auth"],
            "summary": "Public keys of every token this service signs (RFC 7517)",
            "description": inspect.cleandoc(JwksView.__doc__ or ""),
            "security": [],
            "responses": {
                "200": {
                    "description": "The JSON Web Key Set.",
                    "content": _json("JsonWebKeySet"),
                    "headers": {"Cache-Control": _header(f"public, max-age={JWKS_MAX_AGE_SECONDS}")},
                }
            },
        }
    },
}


def openapi_add_plain_views(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """drf-spectacular POSTPROCESSING_HOOKS entry: these two views are plain Django views (see the module
    docstring), which drf-spectacular does not see, so their operations are described here by hand."""
    result.setdefault("paths", {}).update(OPENAPI_PATHS)
    components = result.setdefault("components", {})
    components.setdefault("schemas", {}).update(OPENAPI_SCHEMAS)
    components.setdefault("securitySchemes", {})["clientBasicAuth"] = {
        "type": "http", "scheme": "basic",
        "description": "The service credential's client_id and client_secret (RFC 6749 section 2.3.1).",
    }
    return result
