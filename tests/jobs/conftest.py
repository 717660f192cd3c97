"""Fixtures of the job tests: time is the database's clock, set relative to its now()."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from django.conf import settings
from django.db.models import DateTimeField, Expression, Func

from audit.relay import EVENTS_STREAM
from darktower.redis import _client as _redis


class TransactionNow(Func):
    """PostgreSQL's now(): the transaction's start, the clock the jobs judge by. (Django's Now() is
    statement_timestamp(), which moves between the statements of one test.)"""

    template = "now()"
    output_field = DateTimeField()


def ago(**delta: float) -> Expression:
    """now() minus a duration, evaluated by the database. Inside a test's transaction now() does not move,
    so rows set with this sit exactly where the job under test will look."""
    return TransactionNow() - timedelta(**delta)


def ahead(**delta: float) -> Expression:
    return TransactionNow() + timedelta(**delta)


class EventStream:
    """The Redis events stream, read from the point the test started (entries of earlier runs excluded)."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        last = client.xrevrange(EVENTS_STREAM, count=1)
        self.start = last[0][0].decode() if last else "0-0"

    def entries(self) -> list[dict[str, str]]:
        return [
            {key.decode(): value.decode() for key, value in fields.items()}
            for _, fields in self.client.xrange(EVENTS_STREAM, min=f"({self.start}")
        ]


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    _redis.cache_clear()
    client = redis.Redis.from_url(settings.REDIS_URL)
    yield client
    client.close()
    _redis.cache_clear()


@pytest.fixture
def event_stream(redis_client: redis.Redis) -> EventStream:
    return EventStream(redis_client)
