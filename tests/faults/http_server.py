"""A real HTTP server (gunicorn, as deployments run it) on a throwaway PostgreSQL with a small `max_connections`,
and the guest joins the database-outage tests send it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.error
import urllib.request
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psycopg

from tests.faults.processes import ROOT, START_TIMEOUT_SECONDS, ThrowawayPostgres, _kill_group, wait_for

# Seeded in the throwaway database by `manage.py shell`: three healthy MCs, and meetings that let 100 guests in
# (no more: a larger meeting reserves seats on its MC at placement) without
# a waiting room; prints the meetings' ids.
_SEED = """
from tests.factories import make_controller, make_meeting
for index in range(3):
    make_controller(controller_id=f"mc-db-{index}", region="us-east-1")
print(" ".join(str(make_meeting(allow_guests=True, max_participants=100, max_guests=100).pk) for _ in range({n})))
"""


class SmallPostgres(ThrowawayPostgres):
    """A throwaway PostgreSQL that accepts at most `max_connections` connections (superusers included: the
    server and the test connect as `postgres`, so every slot is usable and the limit is exactly this)."""

    def __init__(self, max_connections: int) -> None:
        super().__init__()
        self.max_connections = max_connections

    def start(self) -> None:
        commands, _ = self._commands()  # type: ignore[no-untyped-call]
        options = (f"-h '' -k {self.dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   f"-c max_connections={self.max_connections} -c superuser_reserved_connections=0")
        commands.pg_ctl(["-w", "-o", options, "-l", str(self.dir / "log"), "start"], pgdata=self.dir,
                        user=self.user, timeout=60)

    def try_connect(self) -> psycopg.Connection | None:
        try:
            return psycopg.connect(**self.conninfo(), connect_timeout=2)  # type: ignore[arg-type]
        except psycopg.OperationalError:
            return None

    def connect_when_free(self, timeout: float = 30.0) -> psycopg.Connection:
        """A connection of the test's own, once the server is up and a slot is free."""
        return wait_for(self.try_connect, timeout=timeout, what="a free PostgreSQL connection slot",
                        log=self.dir / "log")  # type: ignore[return-value]


def manage(env: Mapping[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env={**env}, capture_output=True,
                            text=True, timeout=180)
    assert result.returncode == 0, f"manage.py {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


def migrate_and_seed(postgres: ThrowawayPostgres, *, meetings: int) -> list[str]:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1", "DATABASE_URL": postgres.url()}
    manage(env, "migrate", "--noinput", "-v", "0")
    # The last line: Django's shell may print a line of its own first (the objects it imported).
    return manage(env, "shell", "-c", _SEED.replace("{n}", str(meetings))).strip().splitlines()[-1].split()


class GunicornProcess:
    """`gunicorn -c python:darktower.gunicorn_conf darktower.wsgi:application` on a free loopback port, threaded
    workers, its output in a log file."""

    def __init__(self, *, env: Mapping[str, str], log: Path, workers: int = 2, threads: int = 8) -> None:
        self.application_name = f"dtf-http-{uuid.uuid4().hex[:8]}"
        self.log = log
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1", "LOG_FORMAT": "text",
                    "DB_APPLICATION_NAME": self.application_name,
                    "ALLOWED_HOSTS": "127.0.0.1", "MC_ASSIGN_CALLS": "0", "RATE_LIMIT_JOIN_PER_IP": "1000000",
                    "RATE_LIMIT_JOIN_PER_PRINCIPAL": "1000000",
                    # The seeded MCs never beat: they stay placeable for the whole module.
                    "HEARTBEAT_STALE_THRESHOLD_SECONDS": "86400", **env}
        self.env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.argv = [sys.executable, "-m", "gunicorn", "-c", "python:darktower.gunicorn_conf", "--bind",
                     "127.0.0.1:0", "--workers", str(workers), "--threads", str(threads), "--worker-class", "gthread",
                     # Concurrent runs must not share gunicorn's default control socket under $HOME.
                     "--no-control-socket", "darktower.wsgi:application"]
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(self.argv, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL,
                                            stdout=output, stderr=subprocess.STDOUT, start_new_session=True)
        process = self.process
        match = wait_for(
            lambda: process.poll() is not None or re.search(r"Listening at: http://127\.0\.0\.1:(\d+)", self.output()),
            timeout=START_TIMEOUT_SECONDS, what="gunicorn to listen", log=self.log,
        )
        assert process.poll() is None, f"gunicorn exited:\n{self.output()[-4000:]}"
        self.port = int(match.group(1))  # type: ignore[attr-defined]
        wait_for(lambda: process.poll() is not None or self.healthy(), timeout=START_TIMEOUT_SECONDS,
                 what="gunicorn's workers to answer", log=self.log)
        assert process.poll() is None, f"gunicorn exited:\n{self.output()[-4000:]}"

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health", timeout=5) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process, grace=20)


@dataclass(frozen=True)
class Answer:
    status: int
    retry_after: str | None
    body: object


def guest_join(port: int, meeting_id: str, *, timeout: float = 30.0) -> Answer:
    """POST a guest join; every answer the server gives is returned, none raised."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/api/v1/meetings/{meeting_id}/guest-token",
        data=json.dumps({"display_name": f"G-{uuid.uuid4().hex[:6]}"}).encode(),
        headers={"Content-Type": "application/json"}, method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return Answer(response.status, response.headers.get("Retry-After"), json.loads(response.read() or b"null"))
    except urllib.error.HTTPError as error:
        raw = error.read()
        try:
            body: object = json.loads(raw)
        except ValueError:
            body = raw.decode(errors="replace")
        return Answer(error.code, error.headers.get("Retry-After"), body)


def is_unavailable(answer: Answer) -> bool:
    """A 503 as the API gives it: Retry-After and the error shape."""
    return (answer.status == 503 and answer.retry_after is not None and int(answer.retry_after) >= 1
            and isinstance(answer.body, dict) and answer.body.get("error", {}).get("code") == "service_unavailable")


def join_rows(postgres: SmallPostgres, meeting_ids: list[str]) -> dict[str, tuple[int, ...]]:
    """Per meeting: participants, their join audit rows, active assignments, and assignment outbox rows."""
    with postgres.connect_when_free() as conn:
        return {meeting_id: conn.execute(
            "SELECT (SELECT count(*) FROM meeting_participants WHERE meeting_id = %(m)s),"
            " (SELECT count(*) FROM audit_logs WHERE target_type = 'meeting' AND target_id = %(m)s::text"
            "   AND event_type = 'participant_joined'),"
            " (SELECT count(*) FROM meeting_assignments WHERE meeting_id = %(m)s AND ended_at IS NULL),"
            " (SELECT count(*) FROM outbox_events WHERE aggregate_id = %(m)s::text"
            "   AND event_type = 'meeting_assigned')",
            {"m": meeting_id},
        ).fetchone() or () for meeting_id in meeting_ids}
