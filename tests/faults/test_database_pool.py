"""The connection pool of a real gunicorn worker: it never holds more than DB_POOL_MAX_SIZE connections however
many threads ask, and a request that waits longer than DB_POOL_TIMEOUT_SECONDS for one answers 503 with
Retry-After, as a refused connection does, while the others go on."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import pytest

from tests.faults.http_server import (
    GunicornProcess,
    SmallPostgres,
    guest_join,
    is_unavailable,
    migrate_and_seed,
)
from tests.faults.processes import wait_for

pytestmark = pytest.mark.slow

MAX_CONNECTIONS = 6
THREADS = 8


@dataclass
class Seeded:
    postgres: SmallPostgres
    meetings: list[str]


@pytest.fixture(scope="module")
def seeded() -> Iterator[Seeded]:
    postgres = SmallPostgres(MAX_CONNECTIONS)
    try:
        postgres.init()
        postgres.start()
        yield Seeded(postgres, migrate_and_seed(postgres, meetings=3))
    finally:
        postgres.cleanup()


@pytest.fixture
def start_server(seeded, tmp_path) -> Iterator:
    servers: list[GunicornProcess] = []

    def start(**env: str) -> GunicornProcess:
        server = GunicornProcess(env={"DATABASE_URL": seeded.postgres.url(), **env},
                                 log=tmp_path / f"gunicorn-{len(servers)}.log", workers=1, threads=THREADS)
        servers.append(server)
        server.start()
        return server

    try:
        yield start
    finally:
        for server in servers:
            server.stop()


def connections_of(postgres: SmallPostgres, application_name: str, *, state: str | None = None) -> int:
    with postgres.connect_when_free() as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
            " AND (%s::text IS NULL OR wait_event_type = %s)", [application_name, state, state],
        ).fetchone()[0]


def test_a_worker_never_holds_more_connections_than_its_pool(seeded, start_server):
    server = start_server(DB_POOL_MAX_SIZE="2", DB_POOL_MIN_SIZE="1", DB_POOL_TIMEOUT_SECONDS="10")
    seen: list[int] = []
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            seen.append(connections_of(seeded.postgres, server.application_name))

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        with ThreadPoolExecutor(THREADS * 2) as pool:
            answers = list(pool.map(lambda index: guest_join(server.port, seeded.meetings[index % 2]), range(48)))
    finally:
        done.set()
        watcher.join()

    assert Counter(answer.status for answer in answers) == {201: 48}  # waits of under 10 s: all served
    assert seen and max(seen) <= 2, Counter(seen)
    assert max(seen) == 2  # the burst did use the whole pool
    assert "Traceback" not in server.output()


def test_a_request_that_waits_too_long_for_a_connection_answers_503_and_the_others_go_on(seeded, start_server):
    server = start_server(DB_POOL_MAX_SIZE="1", DB_POOL_MIN_SIZE="1", DB_POOL_TIMEOUT_SECONDS="0.5")
    locked, other = seeded.meetings[2], seeded.meetings[0]
    with seeded.postgres.connect_when_free() as holder:
        holder.autocommit = False
        holder.execute("SELECT 1 FROM meetings WHERE meeting_id = %s FOR UPDATE", [locked])
        with ThreadPoolExecutor(1) as pool:
            # This join takes the pool's only connection and waits there for the meeting's row lock.
            blocked = pool.submit(guest_join, server.port, locked)
            wait_for(lambda: connections_of(seeded.postgres, server.application_name, state="Lock") == 1,
                     timeout=30, what="the join to wait for the row lock", log=server.log)
            refused = guest_join(server.port, other)
            holder.rollback()
            served = blocked.result(timeout=30)

    assert is_unavailable(refused), refused
    assert served.status == 201, served
    assert guest_join(server.port, other).status == 201  # the pool lends again
    output = server.output()
    assert output.count("database unavailable (PoolTimeout)") == 1
    assert "Traceback" not in output
    assert " ERROR " not in output
