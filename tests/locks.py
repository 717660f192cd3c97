"""Waiting for a lock by asking PostgreSQL, never by time."""

from __future__ import annotations

import time

from django.db import connection


def wait_until_blocking(timeout: float = 30.0) -> bool:
    """Whether, within `timeout`, another backend waits for a lock this thread's connection holds (pg_locks: a
    lock not granted, blocked by this backend)."""
    deadline = time.monotonic() + timeout
    with connection.cursor() as cursor:
        while time.monotonic() < deadline:
            cursor.execute("SELECT count(*) FROM pg_locks WHERE NOT granted "
                           "AND pg_backend_pid() = ANY(pg_blocking_pids(pid))")
            if cursor.fetchone()[0]:
                return True
            time.sleep(0.01)
    return False
