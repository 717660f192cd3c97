"""The one place where errors become HTTP responses: `{"error": {"code", "message", "fields"}}`.

DRF calls `exception_handler` for everything raised inside an API view (DRF's own exceptions, Django's
Http404, and the domain errors of darktower.errors that services raise). `api_not_found`, `bad_request`,
`permission_denied`, `csrf_failure` and `server_error` cover what happens outside a view (no URL matched, a
Host header not in ALLOWED_HOSTS, a CSRF or permission refusal, an unhandled crash), so /api/ paths answer
JSON even then; other paths (the admin) keep Django's pages.

A database that cannot be reached (darktower.database_outage) answers 503 with Retry-After wherever it shows: in a
DRF view (`exception_handler`), in any other view (`DatabaseUnavailableMiddleware`), and in a middleware
(`server_error`, with DEBUG off); the outage's one warning (darktower.database_outage) stands for Django's ERROR line
per response.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import redis
from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import DataError, NotSupportedError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.http.response import HttpResponseBase
from django.views.csrf import csrf_failure as django_csrf_failure
from django.views.decorators.csrf import csrf_exempt
from django.views.defaults import bad_request as django_bad_request
from django.views.defaults import page_not_found
from django.views.defaults import permission_denied as django_permission_denied
from django.views.defaults import server_error as django_server_error
from rest_framework import exceptions, status
from rest_framework.response import Response

from darktower import errors
from darktower.api.idempotency import IdempotencyKeyReused
from darktower.database_outage import RETRY_AFTER_SECONDS as DATABASE_RETRY_AFTER_SECONDS
from darktower.database_outage import database_outage, is_connection_failure
from darktower.db import result_type_changed

logger = logging.getLogger(__name__)

DOMAIN_STATUS: dict[type[errors.DomainError], int] = {
    errors.InvalidInput: status.HTTP_400_BAD_REQUEST,
    errors.Unauthenticated: status.HTTP_401_UNAUTHORIZED,
    errors.PermissionDenied: status.HTTP_403_FORBIDDEN,
    errors.NotFound: status.HTTP_404_NOT_FOUND,
    errors.Conflict: status.HTTP_409_CONFLICT,
    errors.Gone: status.HTTP_410_GONE,
    IdempotencyKeyReused: status.HTTP_422_UNPROCESSABLE_ENTITY,
    errors.Throttled: status.HTTP_429_TOO_MANY_REQUESTS,
    errors.NoCapacity: status.HTTP_503_SERVICE_UNAVAILABLE,
    errors.ProviderUnavailable: status.HTTP_503_SERVICE_UNAVAILABLE,
}

# DRF's own exceptions, by the stable code clients see.
DRF_CODES: dict[type[exceptions.APIException], str] = {
    exceptions.ValidationError: "invalid",
    exceptions.ParseError: "malformed_request",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.NotAuthenticated: "unauthenticated",
    exceptions.AuthenticationFailed: "unauthenticated",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.Throttled: "throttled",
}

# deadlock_detected, serialization_failure: the database rolled the transaction back; a retry may succeed.
RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})
# query_canceled (statement_timeout, pg_cancel_backend), lock_not_available (lock_timeout): the database gave up
# on a statement, so the request's transaction rolled back; later, with the load or the lock gone, it may pass.
CANCELLED_SQLSTATES = frozenset({"57014", "55P03"})

# A Redis outage where a request cannot go on without it (logout's revocation): retry shortly.
REDIS_UNAVAILABLE_RETRY_AFTER_SECONDS = 5

# Both auth schemes are named on every 401, so a client learns what it may send.
WWW_AUTHENTICATE = 'Bearer realm="darktower-api", ApiKey realm="darktower-api"'


def error_body(code: str, message: str, fields: Mapping[str, list[str]] | None = None) -> dict[str, Any]:
    return {"error": {"code": code, "message": message, "fields": dict(fields or {})}}


def json_error(
    status_code: int, code: str, message: str, *, fields: Mapping[str, list[str]] | None = None,
    headers: Mapping[str, str] | None = None,
) -> JsonResponse:
    """The error shape for plain Django responses (middleware, URL fallbacks), outside DRF."""
    response = JsonResponse(error_body(code, message, fields), status=status_code)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def flatten_fields(detail: Any, prefix: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail ({"a": {"b": ["x"]}}, lists by index) as {"a.b": ["x"]}."""
    if isinstance(detail, Mapping):
        flat: dict[str, list[str]] = {}
        for key, value in detail.items():
            flat.update(flatten_fields(value, f"{prefix}.{key}" if prefix else str(key)))
        return flat
    if isinstance(detail, list) and detail and all(not isinstance(item, (Mapping, list)) for item in detail):
        return {prefix or "non_field_errors": [str(item) for item in detail]}
    if isinstance(detail, list):
        flat = {}
        for index, item in enumerate(detail):
            if item:
                flat.update(flatten_fields(item, f"{prefix}.{index}" if prefix else str(index)))
        return flat
    return {prefix or "non_field_errors": [str(detail)]}


def retry_after_seconds(exc: errors.DomainError) -> int | None:
    if isinstance(exc, (errors.Throttled, errors.ProviderUnavailable)):
        return max(1, exc.retry_after_seconds)
    if isinstance(exc, errors.NoCapacity):
        return max(1, int(getattr(exc, "retry_after_seconds", settings.NO_CAPACITY_RETRY_AFTER_SECONDS)))
    return None


def domain_error_response(exc: errors.DomainError) -> Response:
    status_code = next(
        (code for cls, code in DOMAIN_STATUS.items() if isinstance(exc, cls)), status.HTTP_400_BAD_REQUEST
    )
    headers: dict[str, str] = {}
    retry_after = retry_after_seconds(exc)
    if retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    if status_code == status.HTTP_401_UNAUTHORIZED:
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    return Response(error_body(exc.code, exc.message, exc.fields), status=status_code, headers=headers)


ResponseT = TypeVar("ResponseT", bound=HttpResponseBase)

DATABASE_UNAVAILABLE_MESSAGE = "The database is unavailable; retry shortly."


def _logged_by_the_outage(response: ResponseT) -> ResponseT:
    # Django logs every 5xx at ERROR, one line per request; the outage's own warning (once per outage) says it.
    response._has_been_logged = True  # type: ignore[attr-defined]
    return response


def database_unavailable(request: HttpRequest) -> HttpResponse:
    """503 for a request that could not get or keep a database connection: JSON for the API, text elsewhere."""
    if is_api_path(request):
        return _logged_by_the_outage(json_error(
            status.HTTP_503_SERVICE_UNAVAILABLE, "service_unavailable", DATABASE_UNAVAILABLE_MESSAGE,
            headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        ))
    response = HttpResponse(DATABASE_UNAVAILABLE_MESSAGE, status=503, content_type="text/plain; charset=utf-8")
    response["Retry-After"] = str(DATABASE_RETRY_AFTER_SECONDS)
    return _logged_by_the_outage(response)


class DatabaseUnavailableMiddleware:
    """A connection failure raised by a view that is not DRF's (the admin, plain Django views) answers 503 instead
    of a 500; DRF views map it in `exception_handler`. After every response, while an outage is open, a request
    that held a working connection ends it (darktower.database_outage)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        response = self.get_response(request)
        if database_outage.open and response.status_code != status.HTTP_503_SERVICE_UNAVAILABLE:
            database_outage.reached_if_connected()
        return response

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        if not is_connection_failure(exception):
            return None
        database_outage.refused(exception)
        return database_unavailable(request)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    """REST_FRAMEWORK["EXCEPTION_HANDLER"]. Returns None (DRF re-raises, a 500) only for real bugs."""
    if isinstance(exc, errors.DomainError):
        return domain_error_response(exc)
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    if is_connection_failure(exc):
        # No connection to be had or kept: nothing committed, the same request may simply be sent again.
        database_outage.refused(exc)
        return _logged_by_the_outage(Response(
            error_body("service_unavailable", DATABASE_UNAVAILABLE_MESSAGE),
            status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
        ))
    if isinstance(exc, OperationalError) and getattr(exc.__cause__, "sqlstate", None) in RETRYABLE_SQLSTATES:
        # PostgreSQL aborted the transaction (a deadlock with, say, a heartbeat flush or a drain, which lock
        # the same rows in another order); everything rolled back, so the request can simply be sent again.
        logger.warning("api: transaction aborted by the database (%s)", getattr(exc.__cause__, "sqlstate", None))
        return Response(
            error_body("retry", "The request collided with a concurrent change and was rolled back; retry."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "1"},
        )
    if isinstance(exc, OperationalError) and getattr(exc.__cause__, "sqlstate", None) in CANCELLED_SQLSTATES:
        logger.warning("api: statement cancelled by the database (%s)", getattr(exc.__cause__, "sqlstate", None))
        return Response(
            error_body("retry", "The database gave up on the request (a timeout) and rolled it back; retry."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "1"},
        )
    if isinstance(exc, NotSupportedError) and result_type_changed(exc):
        # A statement prepared on this connection before a migration changed what it returns, run inside a
        # transaction: that transaction rolled back, and the statement is prepared again when next run.
        logger.warning("api: a prepared statement outlived a change of its result type; prepared again")
        return Response(
            error_body("retry", "The request collided with a schema change and was rolled back; retry."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE, headers={"Retry-After": "1"},
        )
    if isinstance(exc, DataError):
        # A value PostgreSQL refuses (a NUL character, a number out of range) that validation let through:
        # still the client's input, so a 400 rather than a 500. Inputs are checked before they get here
        # (ApiBodyLimitMiddleware, the serializers); this is the net under them, and the statement rolled back.
        logger.warning("api: the database refused a value (%s)", getattr(exc.__cause__, "sqlstate", None))
        return Response(
            error_body("invalid", "A value in the request cannot be stored (invalid characters or out of range)."),
            status=status.HTTP_400_BAD_REQUEST,
        )
    if isinstance(exc, redis.RedisError):
        # Not a bug but an outage of a dependency: the client may retry. Fail-open paths never get here.
        logger.warning("api: Redis unavailable (%s)", type(exc).__name__)
        return Response(
            error_body("service_unavailable", "A backing service is unavailable; retry shortly."),
            status=status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(REDIS_UNAVAILABLE_RETRY_AFTER_SECONDS)},
        )
    if not isinstance(exc, exceptions.APIException):
        return None

    code = next((code for cls, code in DRF_CODES.items() if isinstance(exc, cls)), None) or exc.default_code
    headers: dict[str, str] = {}
    if isinstance(exc, exceptions.ValidationError):
        fields = flatten_fields(exc.detail)
        message = "The request is invalid; see fields."
    else:
        fields = {}
        message = str(exc.detail)
    if exc.status_code == status.HTTP_401_UNAUTHORIZED or isinstance(
        exc, (exceptions.NotAuthenticated, exceptions.AuthenticationFailed)
    ):
        # Our authenticators always name a scheme, so DRF keeps these at 401.
        headers["WWW-Authenticate"] = WWW_AUTHENTICATE
    wait = getattr(exc, "wait", None)
    if wait:
        headers["Retry-After"] = str(max(1, int(wait)))
    return Response(error_body(str(code), message, fields), status=exc.status_code, headers=headers)


def is_api_path(request: HttpRequest) -> bool:
    return request.path.startswith("/api/") or request.path in {"/health", "/ready"}


@csrf_exempt
def api_not_found(request: HttpRequest, *args: Any, **kwargs: Any) -> JsonResponse:
    """Catch-all for /api/ paths no route matched (bad UUIDs in a path included). CSRF-exempt like every API
    view, so a POST to a wrong path answers this JSON 404 rather than Django's HTML CSRF page."""
    return json_error(status.HTTP_404_NOT_FOUND, "not_found", "No such endpoint or resource.")


def not_found(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler404: JSON for the API, Django's page elsewhere (the admin)."""
    if is_api_path(request):
        return api_not_found(request)
    return page_not_found(request, exception)


def bad_request(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler400: a request Django refused before any view ran (a Host header not in ALLOWED_HOSTS, another
    SuspiciousOperation). Django has already logged it."""
    if is_api_path(request):
        if isinstance(exception, DisallowedHost):
            message = "The Host header names a host this server does not serve."
        else:
            message = "The request was refused as malformed."
        return json_error(status.HTTP_400_BAD_REQUEST, "bad_request", message)
    # Django passes an exception; called directly without one, its view copes (the stubs require one).
    return django_bad_request(request, exception)  # type: ignore[arg-type]


def permission_denied(request: HttpRequest, exception: Exception | None = None) -> HttpResponse:
    """handler403: django.core.exceptions.PermissionDenied raised outside DRF."""
    if is_api_path(request):
        return json_error(status.HTTP_403_FORBIDDEN, "permission_denied", "Permission denied.")
    # Django passes an exception; called directly without one, its view copes (the stubs require one).
    return django_permission_denied(request, exception)  # type: ignore[arg-type]


def csrf_failure(request: HttpRequest, reason: str = "") -> HttpResponse:
    """CSRF_FAILURE_VIEW. API views are CSRF-exempt (they take no cookies), so under /api/ this answers only a
    view added without the exemption; it says so in the error shape instead of Django's HTML page."""
    if is_api_path(request):
        return json_error(
            status.HTTP_403_FORBIDDEN, "csrf_failed",
            "CSRF verification failed; API requests authenticate with a bearer token or an API key, not cookies.",
        )
    return django_csrf_failure(request, reason)


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: JSON for the API, Django's page elsewhere. Django logs the exception after it. Django calls it
    while handling the exception, so a connection failure raised in a middleware still answers 503."""
    exception = sys.exc_info()[1]
    if exception is not None and is_connection_failure(exception):
        database_outage.refused(exception)
        return database_unavailable(request)
    if is_api_path(request):
        return json_error(status.HTTP_500_INTERNAL_SERVER_ERROR, "server_error", "Internal server error.")
    return django_server_error(request)
