"""PostgreSQL's CPU per join, the join statement bound on the client (parsed and planned on every join) against
bound on the server and prepared (prepared_cursor): the join service called in process, in autocommit as a request
runs it, on one connection, with that connection's backend's on-CPU time (/proc/<pid>/schedstat) read around each
round. Kinds: a reused join (a user new to a meeting placed earlier), a reload (the same user again), a first join
(a meeting nobody joined yet: it claims an MC) and a guest's join. The two ways alternate round by round, so that
other work on the machine weighs on both alike; the median of the rounds is reported. Not part of `make bench`.

    python -m bench.join_pg [--joins 300] [--runs 5]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import sys
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from bench.common import scratch_database, use_django
from bench.join import _setup, private_redis

NAME = "join_pg"


def _backend_cpu_ns(pid: int) -> int:
    return int(Path(f"/proc/{pid}/schedstat").read_text().split()[0])


def _run(joins: int, runs: int, plan: dict[str, Any]) -> dict[str, dict[str, float]]:
    import uuid

    from django.conf import settings
    from django.db import connection

    from accounts.models import User
    from meetings.models import Meeting
    from meetings.services import participants
    from meetings.services.participants import meeting_join

    settings.MC_ASSIGN_CALLS = False
    settings.HEARTBEAT_STALE_THRESHOLD_SECONDS = 3600
    prepared = participants.prepared_cursor

    @contextlib.contextmanager
    def client_bound() -> Iterator[Any]:
        with connection.cursor() as cursor:
            yield cursor

    ways = {"client-bound": client_bound, "prepared": prepared}
    users = list(User.objects.values_list("pk", flat=True))
    hot: list[tuple[str, str]] = plan["hot"]
    fresh = iter(plan["fresh"])
    # Reused joins and reloads on the first half of the meetings, guests on the other half.
    pairs = iter((meeting, region, user) for meeting, region in hot[:100] for user in users)
    guests = iter([(meeting, region) for meeting, region in hot[100:]] * len(users))
    Meeting.objects.filter(pk__in=[meeting for meeting, _ in hot[100:]]).update(
        allow_guests=True, max_guests=1000, max_participants=1000
    )
    reloader = users[0]

    def reused() -> None:
        meeting, region, user = next(pairs)
        meeting_join(meeting_ref=meeting, region=region, user_id=user, ip_address="192.0.2.1", user_agent="bench")

    def reload() -> None:
        meeting, region = hot[0]
        meeting_join(meeting_ref=meeting, region=region, user_id=reloader, ip_address="192.0.2.1")

    def first() -> None:
        meeting, region = next(fresh)
        meeting_join(meeting_ref=meeting, region=region, user_id=reloader, ip_address="192.0.2.1")

    def guest() -> None:
        meeting, region = next(guests)
        meeting_join(meeting_ref=meeting, region=region, display_name="Bench guest",
                     ip_address=f"198.51.100.{uuid.uuid4().int % 250 + 1}")

    kinds: dict[str, Callable[[], None]] = {"reused": reused, "reload": reload, "first": first, "guest": guest}
    for meeting, region in hot:  # the assignments the reused joins, reloads and guests reuse
        meeting_join(meeting_ref=meeting, region=region, user_id=reloader)
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        (pid,) = cursor.fetchone()
    rounds: dict[str, dict[str, list[float]]] = {kind: {way: [] for way in ways} for kind in kinds}
    for kind, join in kinds.items():
        for cursor_of in ways.values():  # warm-up: the session's caches, the statement prepared
            participants.prepared_cursor = cursor_of
            for _ in range(10):
                join()
        for _ in range(runs):
            for way, cursor_of in ways.items():
                participants.prepared_cursor = cursor_of
                started = _backend_cpu_ns(pid)
                for _ in range(joins):
                    join()
                rounds[kind][way].append((_backend_cpu_ns(pid) - started) / joins / 1e6)
    participants.prepared_cursor = prepared
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] == pid, "the connection changed during the run"
    return {kind: {way: statistics.median(values) for way, values in by_way.items()}
            for kind, by_way in rounds.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=300, help="joins per kind, way and round (default 300)")
    parser.add_argument("--runs", type=int, default=5, help="rounds per kind and way, the median reported")
    args = parser.parse_args(argv)
    first_joins = 2 * (args.joins * args.runs + 10) + 10
    with scratch_database(NAME) as scratch, tempfile.TemporaryDirectory(prefix="bench-join-pg-", dir="/tmp") as tmp:
        work = Path(tmp)
        use_django(scratch)
        (work / "redis").mkdir()
        with private_redis(work / "redis") as redis:
            from django.conf import settings

            settings.REDIS_URL = redis.url
            users = 2 * (args.joins * args.runs + 10) // 100 + 2
            plan_path, _ = _setup(scratch, controllers=200, meetings=200, fresh=first_joins, users=users, work=work)
            meetings = json.loads(plan_path.read_text())
            plan = {"hot": meetings["meetings"][:200], "fresh": meetings["fresh"]}
            load = os.getloadavg()[0]
            figures = _run(args.joins, args.runs, plan)
    print(f"PostgreSQL backend CPU per join, ms (median of {args.runs} rounds of {args.joins}, the ways alternating; "
          f"load average before {load:.2f}, after {os.getloadavg()[0]:.2f}):")
    for kind, by_way in figures.items():
        before, after = by_way["client-bound"], by_way["prepared"]
        print(f"  {kind:7} client-bound {before:.3f}  prepared {after:.3f}  ({(1 - after / before) * 100:.0f} % less)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
