"""Request guards for the API, before any view, parser or query runs: the body size limit (413) and paths
that cannot name anything (404), both in the API's error shape. And the browser's middleware, which API requests
that carry their own credentials partly skip.

DRF's JSON parser reads the request stream directly and would never apply
DATA_UPLOAD_MAX_MEMORY_SIZE; reading `request.body` here applies Django's limit (Content-Length first,
then the bytes actually read, which also covers chunked bodies) before any view or parser runs, and leaves
the body cached for the parser and for the idempotency hash.

A NUL character (`%00`) in the path would reach PostgreSQL through the `<str:...>` path parameters (meeting
codes, controller ids), and PostgreSQL refuses NUL in text: no id or code contains one, so such a path names
nothing and answers 404 here, before any query: in the API's shape under /api/, a plain 404 elsewhere (the admin's
change pages take ids in the path too).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from django.contrib.auth.middleware import AuthenticationMiddleware
from django.contrib.messages.middleware import MessageMiddleware
from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse, HttpResponseNotFound
from django.http.response import HttpResponseBase
from rest_framework import status

from darktower.api.errors import api_not_found, is_api_path, json_error


class ApiBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "\x00" in request.path:
            return api_not_found(request) if is_api_path(request) else HttpResponseNotFound()
        if is_api_path(request):
            try:
                request.body  # noqa: B018 -- reading it applies the limit and caches the body
            except RequestDataTooBig:
                return json_error(
                    status.HTTP_413_REQUEST_ENTITY_TOO_LARGE, "payload_too_large",
                    "The request body is larger than this server accepts.",
                )
            except ValueError:
                return json_error(
                    status.HTTP_400_BAD_REQUEST, "malformed_request", "The Content-Length header is invalid."
                )
        return self.get_response(request)


# Authorization schemes that name the caller on every request (the API's authenticators: a bearer token, an API key).
_CREDENTIAL_SCHEMES = ("bearer ", "apikey ")


def carries_credentials(request: HttpRequest) -> bool:
    """An API request that names its caller in its Authorization header: the API's authenticators set its user,
    and the API sends no messages, so it skips Django's session user and messages. The session stays (lazy: it
    costs nothing unless read), for the API views that keep a browser's state in it; and CSRF stays for every
    request (every API view is exempt, and `manage.py check --deploy` wants Django's own middleware)."""
    header: str = request.META.get("HTTP_AUTHORIZATION", "")
    return bool(header) and header.lstrip()[:7].lower().startswith(_CREDENTIAL_SCHEMES) and is_api_path(request)


class BrowserAuthenticationMiddleware(AuthenticationMiddleware):
    """Django's session user for every request but those that carry credentials (DRF sets theirs)."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if carries_credentials(request):
            return self.get_response(request)
        return super().__call__(request)


class BrowserMessageMiddleware(MessageMiddleware):
    """Django's messages for every request but those that carry credentials."""

    def __call__(self, request: HttpRequest) -> HttpResponseBase | Awaitable[HttpResponseBase]:
        if carries_credentials(request):
            return self.get_response(request)
        return super().__call__(request)
