"""PostgreSQL stops under a real gunicorn (with its connection pool) that is serving guest joins, stays away for a
while, and comes back. Every answer is 201 or a 503 with Retry-After in the API's error shape, never a 500; no
join is half-written (its participant and audit rows, the meeting's assignment and its outbox row: all or none);
and joins succeed again by themselves once the server is back, without restarting anything."""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.faults.http_server import (
    Answer,
    GunicornProcess,
    SmallPostgres,
    guest_join,
    is_unavailable,
    join_rows,
    migrate_and_seed,
)
from tests.faults.processes import wait_for

pytestmark = pytest.mark.slow

# The outage's length is part of what is tested: joins keep arriving for all of it.
OUTAGE_SECONDS = 5.0
RECOVERY_TIMEOUT_SECONDS = 30.0
JOINERS = 8
# Meetings of 100 seats each: room for every join the test sends.
MEETINGS = 8
# The joiners' pace (not a wait for anything): a bound on how many joins the test sends.
PACE_SECONDS = 0.05


@dataclass
class Deployment:
    postgres: SmallPostgres
    server: GunicornProcess
    meetings: list[str]


@pytest.fixture(scope="module")
def deployment(tmp_path_factory) -> Iterator[Deployment]:
    postgres = SmallPostgres(20)
    server = None
    try:
        postgres.init()
        postgres.start()
        meetings = migrate_and_seed(postgres, meetings=MEETINGS)
        # The pool as deployed, small; a request waits at most a second for a connection while the server is away.
        server = GunicornProcess(
            env={"DATABASE_URL": postgres.url(), "DB_POOL_MAX_SIZE": "4", "DB_POOL_MIN_SIZE": "2",
                 "DB_POOL_TIMEOUT_SECONDS": "1"},
            log=tmp_path_factory.mktemp("gunicorn") / "gunicorn.log", workers=2, threads=4,
        )
        server.start()
        yield Deployment(postgres, server, meetings)
    finally:
        if server is not None:
            server.stop()
        postgres.cleanup()


@dataclass
class Joins:
    """Guest joins sent by JOINERS threads, PACE_SECONDS apart: each answer with when it was sent and received."""

    deployment: Deployment
    answers: list[tuple[float, float, str, Answer]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, joiner: int) -> None:
        sent = 0
        while not self.stop.is_set():
            meeting = self.deployment.meetings[(joiner + sent * JOINERS) % len(self.deployment.meetings)]
            sent += 1
            started = time.monotonic()
            answer = guest_join(self.deployment.server.port, meeting)
            with self.lock:
                self.answers.append((started, time.monotonic(), meeting, answer))
            self.stop.wait(PACE_SECONDS)

    def accepted_after(self, moment: float) -> int:
        with self.lock:
            return sum(1 for started, _, _, answer in self.answers if started > moment and answer.status == 201)


def test_postgres_stopped_and_started_under_joins(deployment):
    joins = Joins(deployment)
    threads = [threading.Thread(target=joins.run, args=(index,)) for index in range(JOINERS)]
    for thread in threads:
        thread.start()
    try:
        wait_for(lambda: joins.accepted_after(0) >= 10, timeout=60, what="joins to succeed", log=deployment.server.log)
        deployment.postgres.stop("fast")
        stopped = time.monotonic()
        time.sleep(OUTAGE_SECONDS)
        deployment.postgres.start()
        restarted = time.monotonic()
        wait_for(lambda: joins.accepted_after(restarted) >= 10, timeout=RECOVERY_TIMEOUT_SECONDS,
                 what="joins to succeed again after the restart", log=deployment.server.log)
    finally:
        joins.stop.set()
        for thread in threads:
            thread.join(60)

    answers = [answer for _, _, _, answer in joins.answers]
    statuses = Counter(answer.status for answer in answers)
    assert set(statuses) <= {201, 503}, (statuses, [a for a in answers if a.status not in (201, 503)][:3])
    odd = [answer for answer in answers if answer.status == 503 and not is_unavailable(answer)]
    assert not odd, odd[:3]
    # Joins sent while the server was away (and answered before it was back) were all refused.
    during = Counter(answer.status for started, received, _, answer in joins.answers
                     if started > stopped and received < restarted)
    assert set(during) == {503}, during

    accepted = Counter(meeting for _, _, meeting, answer in joins.answers if answer.status == 201)
    rows = join_rows(deployment.postgres, deployment.meetings)
    for meeting in deployment.meetings:
        participants, audits, assignments, assigned_events = rows[meeting]
        # All or none: a participant row never without its audit row, an assignment never without its event.
        assert participants == audits, (meeting, rows[meeting])
        assert assignments == assigned_events == (1 if participants else 0), (meeting, rows[meeting])
        # Every 201 is written. A join whose COMMIT reached the server just as it stopped may be written with its
        # answer lost (a 503): never more of those than there were refusals.
        assert accepted[meeting] <= participants <= accepted[meeting] + statuses[503], (meeting, rows[meeting])

    output = deployment.server.output()
    assert "Traceback" not in output
    assert " ERROR " not in output
    # One warning per worker per outage (two workers), not one per refused join.
    assert 1 <= output.count("WARNING darktower.database_outage database unavailable") <= 2, statuses
