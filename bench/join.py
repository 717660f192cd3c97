"""Bench 2: join requests per second and p50/p99 over a fleet of 1,000 MCs and 10,000 meetings, against gunicorn
as deployed, next to a trivial DRF endpoint (GET /health) on the same server, with assignment correctness
counted during the run and checked in SQL after it.

Set-up in a scratch database: --controllers healthy MCs in four regions (max 100 meetings each, none running),
--meetings scheduled meetings (100 participants at most, the default; a home region each), --users users with
an access token each (token_issue, audience darktower-api, verified by the server like any other). The server is
`gunicorn -c python:darktower.gunicorn_conf darktower.wsgi:application --worker-class gthread --workers 4
--threads 4` (README, production) with DEBUG off, PROMETHEUS_MULTIPROC_DIR set, and a Redis of its own
(rate-limit counters and token blacklist) so that no other process on the machine shares its keys. Only for
the bench: the join rate limits are raised out of the way (every request comes from 127.0.0.1), and the stale
threshold is raised so that no MC goes stale while nobody heartbeats.

The client (bench/join_client.py, its own process, asyncio, --connections keep-alive connections) runs a
closed loop: first GET /health, then the joins (half of them to 100 hot meetings, so that joins of one meeting
race each other; one in ten for another region than the meeting's home). Then four runs that separate the two
kinds of join: first joins only (each a meeting nobody joined yet, from a set of fresh meetings) and reused joins
only (the hot meetings, whose assignments the mixed run made), each without and with an Idempotency-Key (a new
key per join). Then mixed joins in an open loop: --open-rate joins a second on the clock, whether or not the
server keeps up, over at most --open-connections connections, each join's latency counted from when it was due
(p99 at a given arrival rate, which a closed loop cannot show: it slows down with the server).

CPU per request, over the measured window divided by the requests answered: gunicorn's process tree, the
PostgreSQL server's (postmaster and every backend, background workers included: the bench's database is the only
one at work) and the bench's own Redis; "machine" is their sum. The client's own CPU is not in it.

Statements and round trips per join: one probe join of each kind (first, reused; without and with an
Idempotency-Key) through Django's WSGI handler in the bench's process, the same middleware, view, services and
connection pool as the server, each request taking its connection from the pool and giving it back, as under
gunicorn: the whole request's, and the join service's (meeting_join) among them. Statements are the SQL statements
Django executes (without BEGIN, COMMIT and savepoints); round trips are the messages libpq sends that wait for the
server's answer (a simple Query or an extended-protocol Sync), read from libpq's trace of every connection the
probe uses.

The last row repeats the mixed joins with MC_ASSIGN_CALLS on, after the first runs' assignments and participants are
cleared: every first join of a (meeting, region) then asks its MC with AssignMeetingWithMh before answering. The
MCs' endpoint is one gRPC server in the bench's process that accepts every assignment and counts them (each must
be told once per pair), and each region has two media handlers with a fresh load report.

Correctness: during the runs, every join of one (meeting, region) must name the same MC; after them, in SQL: no
(meeting, region) with two active assignments, one active assignment per pair the client joined, every MC's
current_meetings equal to its active assignments and within max_meetings, one participant row per
successful join.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from bench.common import (
    PYTHON,
    ROOT,
    Result,
    Scratch,
    argument_parser,
    finish,
    free_port,
    load_note,
    process_tree_cpu_seconds,
    scratch_database,
    server_version,
    use_django,
)
from bench.join_client import DRAIN_SECONDS

NAME = "join"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")

_CONTROLLERS = """
INSERT INTO meeting_controllers
    (controller_id, region, endpoint, grpc_endpoint, max_meetings, max_participants, current_meetings,
     health_status, last_heartbeat_at)
SELECT 'mc-' || lpad(i::text, 5, '0'), (%(regions)s::text[])[1 + i %% 4], 'grpc://10.0.0.1:50052',
       'grpc://10.0.' || (i / 250) || '.' || (i %% 250) || ':50052', 100, 1000, 0, 'healthy', now()
FROM generate_series(0, %(n)s - 1) i
"""
_HANDLERS = """
INSERT INTO media_handlers (handler_id, region, endpoint, grpc_endpoint, webtransport_endpoint, max_streams,
                            max_bitrate_mbps, health_status, last_heartbeat_at)
SELECT 'mh-' || lpad(i::text, 3, '0'), (%(regions)s::text[])[1 + i %% 4], 'http://127.0.0.1:50053',
       'http://127.0.0.1:50053', 'https://127.0.0.1:4434', 100000, 10000, 'healthy', now()
FROM generate_series(0, 7) i
"""
# Between the runs without and with the MC call: no assignment, no participant, idle MCs.
_RESET = (
    "TRUNCATE meeting_assignments, meeting_participants",
    """UPDATE meeting_controllers SET current_meetings = 0, assigned_since_heartbeat = 0, reserved_participants = 0,
           assignments_in_window = 0, assignments_window_start = NULL, grpc_endpoint = %(endpoint)s""",
    """UPDATE meetings SET assigned_controller_id = NULL, assigned_region = NULL, status = 'scheduled',
           actual_start_time = NULL""",
)
_MEETINGS = """
INSERT INTO meetings (display_name, meeting_code, created_by_user_id)
SELECT 'Bench meeting ' || i, 'bench-' || lpad(i::text, 6, '0'), (%(hosts)s::uuid[])[1 + i %% %(users)s]
FROM generate_series(0, %(n)s - 1) i
"""
_CHECKS = {
    "pairs with two active assignments": """
        SELECT count(*) FROM (SELECT 1 FROM meeting_assignments WHERE ended_at IS NULL
                              GROUP BY meeting_id, region HAVING count(*) > 1) doubled""",
    "active assignments": "SELECT count(*) FROM meeting_assignments WHERE ended_at IS NULL",
    "ended assignments": "SELECT count(*) FROM meeting_assignments WHERE ended_at IS NOT NULL",
    "MCs with more active assignments than max_meetings": """
        SELECT count(*) FROM meeting_controllers mc
        WHERE mc.max_meetings < (SELECT count(*) FROM meeting_assignments a
                                 WHERE a.meeting_controller_id = mc.controller_id AND a.ended_at IS NULL)""",
    "meetings with more present participants than max_participants": """
        SELECT count(*) FROM meetings m
        WHERE m.max_participants < (SELECT count(*) FROM meeting_participants p
                                    WHERE p.meeting_id = m.meeting_id AND p.left_at IS NULL)""",
    "participants": "SELECT count(*) FROM meeting_participants",
}
_ACTIVE = "SELECT meeting_id::text, region, meeting_controller_id FROM meeting_assignments WHERE ended_at IS NULL"
_KNOWN_PARTICIPANTS = "SELECT count(*) FROM meeting_participants WHERE participant_id = ANY(%s::uuid[])"


@dataclass
class Gunicorn:
    process: subprocess.Popen
    port: int
    log: Path

    def cpu_seconds(self) -> float:
        return process_tree_cpu_seconds(self.process.pid)


def _answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


@dataclass(frozen=True)
class PrivateRedis:
    url: str
    pid: int


@contextlib.contextmanager
def private_redis(where: Path) -> Iterator[PrivateRedis]:
    """A Redis server of this bench's own (the embedded one's binary and config), stopped on the way out."""
    from tools.devenv import Redis, wait_until

    server = Redis(where)
    server.start()
    assert server.process is not None
    try:
        wait_until(server.answers, what="the bench's Redis", hint=server.hint)
        yield PrivateRedis(f"unix://{where / 'redis.sock'}", server.process.pid)
    finally:
        server.stop()


def postmaster_pid(scratch: Scratch) -> int:
    """The PostgreSQL server's main process: every backend is its child."""
    with scratch.connect() as conn:
        backend = int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])
        return psutil.Process(backend).ppid()


@dataclass(frozen=True)
class Meters:
    """The processes whose CPU a request costs: gunicorn's tree, PostgreSQL's tree, the bench's Redis."""

    gunicorn: int
    postgres: int
    redis: int

    def read(self) -> dict[str, float]:
        return {"gunicorn": process_tree_cpu_seconds(self.gunicorn),
                "postgres": process_tree_cpu_seconds(self.postgres), "redis": process_tree_cpu_seconds(self.redis)}


@contextlib.contextmanager
def gunicorn(
    scratch: Scratch, work: Path, redis_url: str, *, workers: int, threads: int, mc_calls: bool = False
) -> Iterator[Gunicorn]:
    from django.conf import settings

    metrics_dir = work / ("prometheus-calls" if mc_calls else "prometheus")
    metrics_dir.mkdir()
    env = scratch.env(
        DEBUG="0", SECRET_KEY=secrets.token_urlsafe(48), LOG_LEVEL="WARNING", ALLOWED_HOSTS="127.0.0.1",
        # Plain HTTP on loopback, as behind a TLS-terminating proxy: no redirect to https.
        SECURE_SSL_REDIRECT="0",
        SIGNING_KEY_ENCRYPTION_KEY=str(settings.SIGNING_KEY_ENCRYPTION_KEY), REDIS_URL=redis_url,
        PROMETHEUS_MULTIPROC_DIR=str(metrics_dir), RATE_LIMIT_JOIN_PER_IP="100000000",
        RATE_LIMIT_JOIN_PER_PRINCIPAL="100000000", HEARTBEAT_STALE_THRESHOLD_SECONDS="3600",
        MC_ASSIGN_CALLS="1" if mc_calls else "0",
    )
    port = free_port()
    command = [
        PYTHON, "-m", "gunicorn", "-c", "python:darktower.gunicorn_conf", "darktower.wsgi:application",
        "--bind", f"127.0.0.1:{port}", "--worker-class", "gthread", "--workers", str(workers),
        "--threads", str(threads), "--no-control-socket",
    ]
    log = work / ("gunicorn-calls.log" if mc_calls else "gunicorn.log")
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    server = Gunicorn(process, port, log)
    try:
        deadline = time.monotonic() + 60
        while not _answers(port):
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"gunicorn did not start:\n{log.read_text()[-3000:]}")
            time.sleep(0.2)
        # Every worker has imported the application before the clock starts (they boot in parallel).
        time.sleep(1.0)
        yield server
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


# What the server's database sessions are doing, sampled: running a statement, waiting for a lock (another
# join's row), waiting on I/O or an internal lock, or idle inside a transaction (waiting for the Python side).
_SESSIONS = """
SELECT CASE WHEN state = 'active' AND wait_event_type IS NULL THEN 'running a statement'
            WHEN state = 'active' AND wait_event_type = 'Lock' THEN 'waiting for a row or transaction lock'
            WHEN state = 'active' THEN 'waiting on ' || wait_event_type
            WHEN state LIKE 'idle in transaction%%' THEN 'idle in a transaction (the Python side works)'
            ELSE 'idle between transactions' END, count(*)
FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend' AND pid <> pg_backend_pid()
GROUP BY 1
"""


class SessionSampler(threading.Thread):
    """Samples _SESSIONS every 50 ms until stopped; `shares` is each state's share of all session samples."""

    def __init__(self, scratch: Scratch) -> None:
        super().__init__(daemon=True)
        self.scratch, self.counts, self.done = scratch, Counter[str](), threading.Event()

    def run(self) -> None:
        with self.scratch.connect() as conn:
            while not self.done.wait(0.05):
                for state, count in conn.execute(_SESSIONS, [self.scratch.name]).fetchall():
                    self.counts[state] += count

    def stop(self) -> dict[str, float]:
        self.done.set()
        self.join()
        total = sum(self.counts.values())
        return {state: count / total for state, count in self.counts.most_common()} if total else {}


class AcceptingMc:
    """The fleet's MCs as one gRPC server: accepts every AssignMeetingWithMh and counts them per (meeting)."""

    def __init__(self) -> None:
        from concurrent import futures

        import grpc

        from dark_tower.internal.v1 import internal_pb2 as pb
        from dark_tower.internal.v1 import internal_pb2_grpc

        self.told: Counter[str] = Counter()
        mc = self

        class Servicer(internal_pb2_grpc.MeetingControllerServiceServicer):
            def AssignMeetingWithMh(self, request, context):
                mc.told[request.meeting_id] += 1
                return pb.AssignMeetingWithMhResponse(accepted=True)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[("grpc.so_reuseport", 0)])
        internal_pb2_grpc.add_MeetingControllerServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.stop(grace=0)


def drive(server: Gunicorn, scratch: Scratch, meters: Meters, *, mode: str, plan: Path | None, connections: int,
          duration: float, warmup: float, pattern: str = "mix", idempotency_key: bool = False,
          fresh_from: int = 0, rate: float = 0.0) -> dict:
    command = [PYTHON, "-m", "bench.join_client", "--port", str(server.port), "--mode", mode,
               "--connections", str(connections), "--duration", str(duration), "--warmup", str(warmup),
               "--pattern", pattern, "--fresh-from", str(fresh_from), "--rate", str(rate)]
    if plan is not None:
        command += ["--plan", str(plan)]
    if idempotency_key:
        command.append("--idempotency-key")
    client = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert client.stdout is not None
    # The client says when its warm-up ended.
    if client.stdout.readline().strip() != "measuring":
        out, err = client.communicate(timeout=120)
        raise RuntimeError(f"client failed before measuring:\n{err[-3000:]}")
    time.sleep(0.3)
    cpu_start = meters.read()
    sampler = SessionSampler(scratch)
    sampler.start()
    time.sleep(duration - 0.3)
    sessions = sampler.stop()
    cpu_end = meters.read()
    out, err = client.communicate(timeout=duration + warmup + 120)
    if client.returncode != 0:
        raise RuntimeError(f"client failed:\n{err[-3000:]}")
    figures = json.loads(out.strip().splitlines()[-1])
    if figures["exhausted"]:
        raise RuntimeError("the client ran out of fresh meetings: raise --fresh-meetings")
    # The CPU window is a little shorter than the client's (the sampler starts after the warm-up ends). The open
    # loop's joins answered after the window (a server behind its schedule) spent their CPU outside it: its CPU is
    # divided by the joins answered within the window.
    answered = figures["ok_in_window"] if rate else figures["ok"]
    per_request = {name: (cpu_end[name] - cpu_start[name]) / answered * 1000 if answered else float("nan")
                   for name in cpu_start}
    figures["cpu_ms_per_request"] = {**per_request, "machine": sum(per_request.values())}
    figures["server_cpu_ms_per_request"] = per_request["gunicorn"]
    figures["database_sessions"] = sessions
    return figures


def _setup(scratch: Scratch, *, controllers: int, meetings: int, fresh: int, users: int,
           work: Path) -> tuple[Path, list[str]]:
    """The fleet, the meetings and the users; returns the client's plan file (tokens, meetings, `fresh` more
    meetings for the first-join runs) and two more meetings, left out of the plan, for the probe joins."""
    from django.conf import settings

    from accounts.models import User
    from accounts.services.users import user_scopes
    from accounts.tokens import token_issue

    people = [User(email=f"bench-user-{n}@bench.invalid", display_name=f"Bench user {n}") for n in range(users)]
    for person in people:
        person.set_unusable_password()
    User.objects.bulk_create(people)
    hosts = [str(person.pk) for person in people]
    with scratch.connect() as conn:
        conn.execute(_CONTROLLERS, {"regions": list(REGIONS), "n": controllers})
        conn.execute(_HANDLERS, {"regions": list(REGIONS)})
        conn.execute(_MEETINGS, {"n": meetings + fresh + 2, "hosts": hosts, "users": users})
        ids = [row[0] for row in conn.execute("SELECT meeting_id::text FROM meetings ORDER BY meeting_code")]
        # A home region per meeting, the regions in turn.
        pairs = [[meeting_id, REGIONS[number % len(REGIONS)]] for number, meeting_id in enumerate(ids)]
        conn.execute("VACUUM ANALYZE")
    tokens = [
        token_issue(subject=str(person.pk), audience=settings.JWT_API_AUDIENCE, scopes=sorted(user_scopes(person)),
                    lifetime_seconds=3600).token
        for person in people
    ]
    plan = work / "plan.json"
    plan.touch(mode=0o600)
    probes = [pairs.pop()[0], pairs.pop()[0]]
    plan.write_text(json.dumps({"tokens": tokens, "meetings": pairs[:meetings], "fresh": pairs[meetings:]}))
    return plan, probes


# A frontend message in libpq's trace (PQtrace, timestamps suppressed) that waits for the server's answer.
_ROUND_TRIP = re.compile(r"^F\s+\d+\s+(Query|Sync)\b", re.MULTILINE)


# Django's query log holds BEGIN, COMMIT and savepoints too: they are round trips, not statements.
_TRANSACTION_CONTROL = re.compile(r"^\s*(BEGIN|COMMIT|ROLLBACK|SAVEPOINT|RELEASE SAVEPOINT)\b")


class LibpqTrace:
    """libpq's trace of every connection this process's Django uses from now on (and of those idle in its pool),
    into one file: the round trips a request makes, counted from what went on the wire."""

    def __init__(self, work: Path) -> None:
        from django.db import connection
        from django.db.backends.signals import connection_created
        from psycopg import pq

        self.path = work / "libpq.trace"
        self.file = self.path.open("w")
        self.traced: set[int] = set()
        self._flags = pq.Trace.SUPPRESS_TIMESTAMPS | pq.Trace.REGRESS_MODE
        connection_created.connect(self._created, weak=False)
        connection.ensure_connection()
        self._trace(connection.connection)
        pool = getattr(connection, "pool", None)
        # psycopg_pool keeps its idle connections in `_pool`: trace them before the probe borrows them.
        for idle in list(getattr(pool, "_pool", ())):
            self._trace(idle)

    def _created(self, sender: object, connection: Any, **kwargs: object) -> None:
        self._trace(connection.connection)

    def _trace(self, conn: Any) -> None:
        if conn is None or id(conn.pgconn) in self.traced:
            return
        self.traced.add(id(conn.pgconn))
        conn.pgconn.trace(self.file.fileno())
        conn.pgconn.set_trace_flags(self._flags)

    def round_trips(self) -> int:
        self.file.flush()
        return len(_ROUND_TRIP.findall(self.path.read_text()))


def _wsgi_post(app: Any, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
    """POST through Django's WSGI handler as gunicorn calls it: the request takes its connection from the pool and
    gives it back at its end (Django's test client keeps one connection across requests instead)."""
    import io

    environ = {
        "REQUEST_METHOD": "POST", "PATH_INFO": path, "QUERY_STRING": "", "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80", "SERVER_PROTOCOL": "HTTP/1.1", "REMOTE_ADDR": "127.0.0.1", "HTTP_HOST": "127.0.0.1",
        "wsgi.input": io.BytesIO(body), "wsgi.url_scheme": "http", "wsgi.errors": sys.stderr,
        "CONTENT_TYPE": "application/json", "CONTENT_LENGTH": str(len(body)), **headers,
    }
    answer: dict[str, int] = {}

    def start_response(status: str, response_headers: Any, exc_info: Any = None) -> None:
        answer["status"] = int(status.split()[0])

    response = app(environ, start_response)
    try:
        content = b"".join(response)
    finally:
        response.close()
    return answer["status"], content


def _statements_per_join(plan: Path, probe_meetings: list[str], work: Path) -> dict[str, dict[str, int]]:
    """Statements and round trips of a first and of a reused join (another user joining a meeting whose
    assignment the first made), without and with an Idempotency-Key, through Django's WSGI handler in this process
    (the same middleware, view, services and pool as the server, each request taking its connection from the pool):
    the whole request's, and the join service's (meeting_join) among them."""
    import uuid

    from django.core.handlers.wsgi import WSGIHandler
    from django.db import connection

    from meetings.api import views

    tokens = json.loads(plan.read_text())["tokens"]
    trace = LibpqTrace(work)
    app = WSGIHandler()
    service = views.meeting_join
    tally: Counter[str] = Counter()
    inside = False

    def observed_service(**kwargs: Any) -> Any:
        nonlocal inside
        trips = trace.round_trips()
        inside = True
        try:
            return service(**kwargs)
        finally:
            inside = False
            tally["service_round_trips"] += trace.round_trips() - trips

    def count(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
        if not _TRANSACTION_CONTROL.match(sql):
            tally["statements"] += 1
            tally["service_statements"] += inside
        return execute(sql, params, many, context)

    counts: dict[str, dict[str, int]] = {}
    views.meeting_join = observed_service  # watched, then put back
    try:
        for meeting, keyed in zip(probe_meetings, ("", ", Idempotency-Key"), strict=True):
            for kind, token in (("first", tokens[0]), ("reused", tokens[1 % len(tokens)])):
                headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
                if keyed:
                    headers["HTTP_IDEMPOTENCY_KEY"] = str(uuid.uuid4())
                tally.clear()
                trips = trace.round_trips()
                with connection.execute_wrapper(count):
                    status, content = _wsgi_post(app, f"/api/v1/meetings/{meeting}/join",
                                                 json.dumps({"region": REGIONS[0]}).encode(), headers)
                if status != 201:
                    raise RuntimeError(f"probe join answered {status}: {content[:500]!r}")
                counts[kind + keyed] = {"statements": tally["statements"], "round_trips": trace.round_trips() - trips,
                                        "service_statements": tally["service_statements"],
                                        "service_round_trips": tally["service_round_trips"]}
    finally:
        views.meeting_join = service
    return counts


def _checks(scratch: Scratch, joins: list[dict], probe_meetings: list[str]) -> tuple[dict[str, int], dict[str, int]]:
    """(figures, problems): the database after the runs `joins`, and what contradicts the answers the client
    got in any of them (the same (meeting, region) must have been answered the same MC in every run)."""
    participant_ids = sorted({participant for join in joins for participant in join["participant_ids"]})
    with scratch.connect() as conn:
        checks = {label: int(conn.execute(sql).fetchone()[0]) for label, sql in _CHECKS.items()}
        active = {(meeting, region): mc for meeting, region, mc in conn.execute(_ACTIVE).fetchall()
                  if meeting not in probe_meetings}
        known = int(conn.execute(_KNOWN_PARTICIPANTS, [participant_ids]).fetchone()[0])
    answered: dict[tuple[str, str], str] = {}
    # Joins the open loop's client gave up waiting for: the server may have assigned their pair all the same.
    abandoned = {(meeting, region) for join in joins for meeting, region in join.get("abandoned_pairs", ())}
    inconsistent = sum(join["inconsistent_answers"] for join in joins)
    for join in joins:
        for meeting, region, mc in join["answers"]:
            inconsistent += answered.setdefault((meeting, region), mc) != mc
    problems = {
        "inconsistent answers during the runs": inconsistent,
        "pairs with two active assignments": checks["pairs with two active assignments"],
        "answered MC is not the active assignment": sum(active.get(pair) != mc for pair, mc in answered.items()),
        "active assignments of no answered pair": len(set(active) - set(answered) - abandoned),
        "MCs with more active assignments than max_meetings":
            checks["MCs with more active assignments than max_meetings"],
        "meetings with more present participants than max_participants":
            checks["meetings with more present participants than max_participants"],
        "answered participants missing in the database": len(participant_ids) - known,
    }
    return checks, problems


# The runs after GET /health, in order: the mixed run assigns the hot meetings that the reused runs join.
JOIN_RUNS = (
    ("join", "POST .../join (mixed)", "mix", False),
    ("reused", "POST .../join, reused assignment", "reused", False),
    ("reused_key", "POST .../join, reused, Idempotency-Key", "reused", True),
    ("first", "POST .../join, first join", "first", False),
    ("first_key", "POST .../join, first join, Idempotency-Key", "first", True),
)


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--controllers", type=int, default=1_000, help="healthy MCs (default 1,000)")
    parser.add_argument("--meetings", type=int, default=10_000, help="meetings (default 10,000)")
    parser.add_argument("--fresh-meetings", type=int, default=24_000,
                        help="more meetings for the first-join runs, each joined once (default 24,000)")
    parser.add_argument("--users", type=int, default=100, help="users joining, one token each (default 100)")
    parser.add_argument("--connections", type=int, default=16, help="client connections in flight (default 16)")
    parser.add_argument("--workers", type=int, default=4, help="gunicorn workers (default 4, README production)")
    parser.add_argument("--threads", type=int, default=4, help="threads per worker (default 4, README production)")
    parser.add_argument("--duration", type=float, default=15, help="measured seconds per run (default 15)")
    parser.add_argument("--open-rate", type=float, default=300,
                        help="joins per second offered by the open-loop run (default 300)")
    parser.add_argument("--open-connections", type=int, default=64,
                        help="connections the open-loop run may open at most (default 64)")
    args = parser.parse_args(argv)
    if args.quick:
        args.controllers, args.meetings, args.fresh_meetings, args.users, args.duration = 40, 200, 2_000, 5, 1.0
        args.workers, args.threads, args.connections, args.open_rate, args.open_connections = 1, 2, 4, 20, 8
    warmup = 0.3 if args.quick else 3.0

    result = Result(
        name=NAME, title="Bench 2: join",
        headers=["endpoint", "requests/s", "p50 ms", "p99 ms", "p99.9 ms", "errors", "gunicorn CPU ms/request",
                 "PostgreSQL CPU ms/request", "Redis CPU ms/request", "machine CPU ms/request", "vs GET /health"],
    )
    with scratch_database(NAME, prefix=args.db_prefix) as scratch, tempfile.TemporaryDirectory(
            prefix="bench-join-", dir="/tmp") as tmp:
        work = Path(tmp)
        use_django(scratch)
        (work / "redis").mkdir()
        with private_redis(work / "redis") as redis:
            from django.conf import settings

            settings.REDIS_URL = redis.url  # the probe joins' rate-limit counters stay out of the shared Redis
            settings.MC_ASSIGN_CALLS = False  # the probe joins' MCs are rows without a server
            plan, probe_meetings = _setup(
                scratch, controllers=args.controllers, meetings=args.meetings, fresh=args.fresh_meetings,
                users=args.users, work=work,
            )
            statements = _statements_per_join(plan, probe_meetings, work)
            load_before = os.getloadavg()[0]
            postgres_pid = postmaster_pid(scratch)
            with gunicorn(scratch, work, redis.url, workers=args.workers, threads=args.threads) as server:
                meters = Meters(server.process.pid, postgres_pid, redis.pid)
                runs = {"health": drive(server, scratch, meters, mode="health", plan=None,
                                        connections=args.connections, duration=args.duration, warmup=warmup)}
                fresh_from = 0
                for key, _, pattern, keyed in JOIN_RUNS:
                    runs[key] = drive(server, scratch, meters, mode="join", plan=plan, connections=args.connections,
                                      duration=args.duration, warmup=warmup, pattern=pattern, idempotency_key=keyed,
                                      fresh_from=fresh_from)
                    fresh_from += runs[key]["fresh_taken"]
                runs["open"] = drive(server, scratch, meters, mode="join", plan=plan,
                                     connections=args.open_connections, duration=args.duration, warmup=warmup,
                                     rate=args.open_rate)
            joined = [*(runs[key] for key, *_ in JOIN_RUNS), runs["open"]]
            checks, problems = _checks(scratch, joined, probe_meetings)
            mc = AcceptingMc()
            try:
                with scratch.connect() as conn:
                    for statement in _RESET:
                        conn.execute(statement, {"endpoint": mc.endpoint})
                with gunicorn(scratch, work, redis.url, workers=args.workers, threads=args.threads,
                              mc_calls=True) as server:
                    meters = Meters(server.process.pid, postgres_pid, redis.pid)
                    runs["join_mc_calls"] = drive(server, scratch, meters, mode="join", plan=plan,
                                                  connections=args.connections, duration=args.duration,
                                                  warmup=warmup)
            finally:
                mc.stop()
        load_after = os.getloadavg()[0]
        calls_checks, calls_problems = _checks(scratch, [runs["join_mc_calls"]], [])
        # Nothing refuses here, so every assignment was told exactly once, and nothing else was told.
        made = calls_checks["active assignments"] + calls_checks["ended assignments"]
        calls_problems["calls other than one per assignment"] = abs(sum(mc.told.values()) - made)
        postgres = server_version(scratch)

    health, join, called, opened = runs["health"], runs["join"], runs["join_mc_calls"], runs["open"]
    answered_participants = len({participant for run in joined for participant in run["participant_ids"]})
    for run in (*joined, called):
        del run["participant_ids"], run["answers"], run["abandoned_pairs"]
    labelled = [("GET /health (trivial DRF view)", health), *((label, runs[key]) for key, label, *_ in JOIN_RUNS),
                (f"POST .../join (mixed), open loop at {args.open_rate:g}/s", opened),
                ("POST .../join (mixed), MC asked on first joins", called)]
    for label, run in labelled:
        errors = {code: count for code, count in run["codes"].items() if code not in ("200", "201")}
        cpu = run["cpu_ms_per_request"]
        result.add(label, run["rate"], run["p50_ms"], run["p99_ms"], run["p999_ms"],
                   ", ".join(f"{code} {count}" for code, count in errors.items()) or "0",
                   cpu["gunicorn"], cpu["postgres"], cpu["redis"], cpu["machine"],
                   f"{run['rate'] / health['rate']:.0%}" if health["rate"] else "-")
    correct = not any(problems.values()) and not any(calls_problems.values())
    result.data.update({"runs": runs, "checks": checks, "problems": problems, "correct": correct,
                        "mc_calls_checks": calls_checks, "mc_calls_problems": calls_problems,
                        "mc_calls_told": sum(mc.told.values()),
                        "controllers": args.controllers, "meetings": args.meetings, "users": args.users,
                        "workers": args.workers, "threads": args.threads, "connections": args.connections,
                        "fresh_meetings": args.fresh_meetings, "load_average": [load_before, load_after],
                        "statements_per_join": statements})
    result.notes += [
        f"Server: gunicorn {args.workers} workers x {args.threads} threads (gthread), DEBUG off, one request per "
        f"client connection in flight, {args.connections} connections, closed loop, {args.duration:g} s measured "
        f"after {warmup:g} s of warm-up. Fleet {args.controllers:,} MCs, {args.meetings:,} meetings, "
        f"{args.users:,} users.",
        f"Ratio: mixed joins are {join['rate'] / health['rate']:.0%} of the trivial endpoint's rate on the same "
        "server and client. Statements / round trips per join request (probe joins through the WSGI handler in the "
        "bench process, each taking its connection from the pool; round trips add BEGIN, COMMIT, savepoints and "
        "the pool's checks), of which the join service's in brackets: " + ", ".join(
            f"{kind} {counts['statements']} / {counts['round_trips']} ({counts['service_statements']} / "
            f"{counts['service_round_trips']})" for kind, counts in statements.items())
        + "; besides, an EdDSA verify, an EdDSA sign and one Redis round trip for the rate limits and the token's "
        "revocation lookup together.",
        f"Open loop (the row before the last): {args.open_rate:g} mixed joins a second offered on the clock over "
        f"at most {args.open_connections} connections ({opened['connections_opened']} opened), each latency "
        f"counted from when the join was due; {opened['rate']:.1f} joins/s answered in the {args.duration:g} s "
        f"measured; of the joins due then, p50 {opened['p50_ms']:.1f} ms, p99 {opened['p99_ms']:.1f} ms, p99.9 "
        f"{opened['p999_ms']:.1f} ms, {opened['codes'].get('unanswered', 0)} unanswered "
        f"{DRAIN_SECONDS:g} s after the schedule's end; {opened['late_sends']} joins sent more than one interval "
        "late by the client itself.",
        f"First join of a (meeting, region) seen by the client: p50 {join['first_join_p50_ms']:.1f} ms, p99 "
        f"{join['first_join_p99_ms']:.1f} ms over {join['first_joins']:,} joins; later joins (assignment reused): "
        f"p50 {join['repeat_join_p50_ms']:.1f} ms, p99 {join['repeat_join_p99_ms']:.1f} ms.",
        f"Correctness: {'all checks passed' if correct else 'FAILED'}: " + ", ".join(
            f"{label} {value}" for label, value in problems.items())
        + f" ({join['successes_total']:,} successful joins, warm-up included, over {join['pairs_total']:,} "
        f"(meeting, region) pairs; {checks['active assignments']:,} active assignments, "
        f"{checks['ended assignments']:,} ended; {answered_participants:,} distinct participants answered, "
        f"{checks['participants']:,} participant rows).",
        f"With the MC asked (MC_ASSIGN_CALLS on, last row): {called['rate'] / join['rate']:.0%} of the joins' rate "
        f"without; first joins p50 {called['first_join_p50_ms']:.1f} ms, p99 {called['first_join_p99_ms']:.1f} ms "
        f"(without: {join['first_join_p50_ms']:.1f} / {join['first_join_p99_ms']:.1f}), later joins p50 "
        f"{called['repeat_join_p50_ms']:.1f} ms, p99 {called['repeat_join_p99_ms']:.1f} ms. The MCs were told of "
        f"{sum(mc.told.values()):,} assignments for {called['pairs_total']:,} (meeting, region) pairs: "
        + ("each once" if not any(calls_problems.values()) else "PROBLEMS: " + ", ".join(
            f"{label} {value}" for label, value in calls_problems.items() if value))
        + "; the accepting MC server runs in the bench's process, on the same 2 cores.",
        "Where the join's database sessions spent the measured window (pg_stat_activity sampled every 50 ms): "
        + ", ".join(f"{state} {share:.0%}" for state, share in join["database_sessions"].items()) + ".",
        "Client and server share the machine's 2 cores (and PostgreSQL with them): the client's own CPU caps "
        "the trivial endpoint's figure, and the same client drives every row.",
        load_note(load_before, load_after),
    ]
    finish(result, args, postgres=postgres)
    return 0 if correct else 1


if __name__ == "__main__":
    sys.exit(main())
