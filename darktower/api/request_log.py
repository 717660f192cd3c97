"""What django.request logs about the API's answers."""

from __future__ import annotations

import logging

from rest_framework import status


class ExpectedAnswerFilter(logging.Filter):
    """Lowers django.request's ERROR for a 503 to WARNING, the level Django gives every 4xx. A 503 is an answer
    given on purpose, with Retry-After: no capacity in a region, a transaction the database rolled back, a
    dependency that is down (the code that chose it logs why). Paging on it would ring for a busy fleet; a 500,
    a bug, stays at ERROR."""

    def filter(self, record: logging.LogRecord) -> bool:
        unavailable = getattr(record, "status_code", None) == status.HTTP_503_SERVICE_UNAVAILABLE
        if unavailable and record.levelno > logging.WARNING:
            record.levelno = logging.WARNING
            record.levelname = logging.getLevelName(logging.WARNING)
        return True
