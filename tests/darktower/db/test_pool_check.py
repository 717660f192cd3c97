"""The connection pool's check before lending a connection: only for a connection idle for
DB_POOL_CHECK_IDLE_SECONDS or more, and a dead one is replaced instead of being lent.

The test process runs without the pool (tests/conftest.py): these tests build a pooled connection of their own,
with the deployed settings and backend, on the test database.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Iterator

import pytest
from django.db import connection, connections
from django.db.utils import load_backend
from psycopg import pq

from tests.conftest import DEPLOYED_DATABASE

pytestmark = pytest.mark.django_db


@pytest.fixture
def pooled() -> Iterator:
    """A DatabaseWrapper as deployed (ENGINE, health checks) with a pool of one connection, on the test database."""
    deployed = DEPLOYED_DATABASE
    assert deployed["OPTIONS"].get("pool"), "these tests need the pool on (DB_POOL_MAX_SIZE above 0)"
    settings_dict = {
        **deployed, "NAME": connections["default"].settings_dict["NAME"],
        "OPTIONS": {**deployed["OPTIONS"], "pool": {"min_size": 1, "max_size": 1, "timeout": 5}},
    }
    backend = load_backend(deployed["ENGINE"])
    # Its own wrapper under the default alias (signal receivers look the alias up): the process's default
    # connection has no pool, so this pool is the only one under that name.
    wrapper = backend.DatabaseWrapper(settings_dict, alias="default")
    try:
        yield wrapper
    finally:
        wrapper.close()
        wrapper.close_pool()


def _backend_pid(wrapper) -> int:
    with wrapper.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        return cursor.fetchone()[0]


def _round_trips(path: str) -> list[str]:
    """The messages of a libpq trace that wait for the server's answer (a simple Query, an extended-protocol Sync)."""
    with open(path) as trace:
        return [line for line in trace if line.startswith("F") and line.split("\t")[2:3] in (["Query"], ["Sync"])]


def test_a_connection_given_back_moments_ago_is_lent_without_a_check(pooled, settings):
    settings.DB_POOL_CHECK_IDLE_SECONDS = 3600
    first = _backend_pid(pooled)
    raw = pooled.connection
    pooled.close()  # back to the pool, as at a request's end
    with tempfile.NamedTemporaryFile("r", suffix=".trace") as trace:
        fd = os.open(trace.name, os.O_WRONLY)
        raw.pgconn.trace(fd)
        raw.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE)
        try:
            again = _backend_pid(pooled)
        finally:
            raw.pgconn.untrace()
            os.close(fd)
        # The request's own statement is the only round trip: no empty query before it.
        trips = _round_trips(trace.name)
        assert len(trips) == 1, trips
    assert pooled.connection is raw
    assert again == first


def test_a_connection_idle_past_the_bound_is_checked_and_replaced_when_dead(pooled, settings):
    settings.DB_POOL_CHECK_IDLE_SECONDS = 0
    dead = _backend_pid(pooled)
    pooled.close()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_terminate_backend(%s)", [dead])
        # Terminated once the backend has left pg_stat_activity (polled, never slept on). The test's transaction
        # would read one snapshot of pg_stat_activity for good: each poll clears it first.
        deadline = time.monotonic() + 30
        while True:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [dead])
            if cursor.fetchone()[0] == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail("the backend did not end")
            time.sleep(0.01)  # between polls of pg_stat_activity, not waiting for the backend by time
    # The request is lent a working connection: its statement runs, on another backend.
    assert _backend_pid(pooled) != dead
