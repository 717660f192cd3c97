"""A burst of concurrent guest joins through a real gunicorn whose PostgreSQL accepts fewer connections than the
server has threads: every answer is 201 or a 503 with Retry-After in the API's error shape, never a 500, and every
join that was answered 201 is written whole (participant and audit row; the meeting's assignment and its outbox
row once), every refused one not at all."""

from __future__ import annotations

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
    join_rows,
    migrate_and_seed,
)

pytestmark = pytest.mark.slow

# 2 workers x 8 threads = 16 request threads against 6 connections.
MAX_CONNECTIONS = 6
WORKERS, THREADS = 2, 8
MEETINGS = 4
JOINS = 96
IN_FLIGHT = 32


@dataclass
class Deployment:
    postgres: SmallPostgres
    server: GunicornProcess
    meetings: list[str]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    postgres = SmallPostgres(MAX_CONNECTIONS)
    server = None
    try:
        postgres.init()
        postgres.start()
        meetings = migrate_and_seed(postgres, meetings=MEETINGS)
        # A deployment without the pool (one connection per thread: 16 > 6), each closed after its request, so that
        # the test finds a slot to check the rows with.
        server = GunicornProcess(env={"DATABASE_URL": postgres.url(), "DB_POOL_MAX_SIZE": "0", "DB_CONN_MAX_AGE": "0"},
                                 log=tmp_path_factory.mktemp("gunicorn") / "gunicorn.log", workers=WORKERS,
                                 threads=THREADS)
        server.start()
        yield Deployment(postgres, server, meetings)
    finally:
        if server is not None:
            server.stop()
        postgres.cleanup()


def burst(deployment: Deployment, joins: int) -> list[tuple[str, object]]:
    with ThreadPoolExecutor(IN_FLIGHT) as pool:
        targets = [deployment.meetings[index % len(deployment.meetings)] for index in range(joins)]
        return list(zip(targets, pool.map(lambda meeting: guest_join(deployment.server.port, meeting), targets)))


def assert_every_join_whole_or_absent(deployment: Deployment, answers) -> None:
    accepted = Counter(meeting for meeting, answer in answers if answer.status == 201)
    rows = join_rows(deployment.postgres, deployment.meetings)
    for meeting in deployment.meetings:
        participants, audits, assignments, assigned_events = rows[meeting]
        assert participants == audits == accepted[meeting], (meeting, rows[meeting], accepted[meeting])
        assert assignments == assigned_events == (1 if participants else 0), (meeting, rows[meeting])


def test_more_joins_than_connections_answer_201_or_503_never_500(deployment):
    answers = burst(deployment, JOINS)

    statuses = Counter(answer.status for _, answer in answers)
    assert set(statuses) <= {201, 503}, (statuses, [a for _, a in answers if a.status not in (201, 503)][:3])
    odd = [answer for _, answer in answers if answer.status == 503 and not is_unavailable(answer)]
    assert not odd, odd[:3]
    assert statuses[201] > 0, statuses
    assert_every_join_whole_or_absent(deployment, answers)
    output = deployment.server.output()
    assert "Traceback" not in output
    assert "ERROR" not in output
