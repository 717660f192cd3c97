"""One log line per HTTP request: method, path, status, duration (logger `darktower.access`, at INFO).

The path only: the query string may carry what must not be logged (a search for an email, a token a client put
there), and the redacting filter of every handler (darktower/log_redaction.py) blanks credentials that a path
itself may carry, such as a recording share link's token. No headers, no client address, no user.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

logger = logging.getLogger("darktower.access")


class AccessLogMiddleware:
    """Second in MIDDLEWARE (after the metrics middleware): it sees the final status of everything below it."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed_ms = (time.perf_counter() - started) * 1000
        logger.info("%s %s %s %.1f ms", request.method, request.path, response.status_code, elapsed_ms)
        return response

