"""Request-body guard for the API: the size limit answers 413 in the API's error shape.

DRF's JSON parser reads the request stream directly and would never apply
DATA_UPLOAD_MAX_MEMORY_SIZE; reading `request.body` here applies Django's limit (Content-Length first,
then the bytes actually read, which also covers chunked bodies) before any view or parser runs, and leaves
the body cached for the parser and for the idempotency hash.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import RequestDataTooBig
from django.http import HttpRequest, HttpResponse
from rest_framework import status

from darktower.api.errors import is_api_path, json_error


class ApiBodyLimitMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
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
