"""The Python CPU of one join request, in process: Django's WSGI handler as gunicorn calls it (DEBUG off, the same
middleware, view, services and connection pool), one request at a time, without a server, a client or threads.

Set-up as bench 2 (bench/join.py, at a smaller scale: a scratch database, a Redis of its own), then in a child
process with the server's environment: reused joins (users joining meetings whose assignment an earlier join made)
and first joins (each a meeting nobody joined yet), without and with an Idempotency-Key, each kind timed with
time.process_time (this process's CPU only: PostgreSQL's and Redis's are not in it), the median and the best of
--runs rounds (the best is the least disturbed by other work on the machine), and the share of it spent in garbage
collection (gc.callbacks).
With --profile, a cProfile of the reused joins in CPU time, the functions with the most cumulative time. Not part of
`make bench` or `make test`: a before/after figure for a change to the request's Python.

    python -m bench.join_micro [--joins 400] [--runs 5] [--profile]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

from bench.common import PYTHON, ROOT, scratch_database, use_django
from bench.join import REGIONS, _setup, _wsgi_post, private_redis

NAME = "join_micro"


def _child(plan_path: Path, joins: int, runs: int, profile: bool, gc_threshold: int | None) -> None:
    import django

    django.setup()
    from django.core.handlers.wsgi import WSGIHandler

    from darktower.gunicorn_conf import post_worker_init

    plan = json.loads(plan_path.read_text())
    tokens: list[str] = plan["tokens"]
    hot = [meeting for meeting, _ in plan["meetings"][:20]]
    fresh = iter(meeting for meeting, _ in plan["fresh"])
    app = WSGIHandler()
    post_worker_init(None)  # what a gunicorn worker does once it has loaded the application
    if gc_threshold is not None:
        gc.set_threshold(gc_threshold, *gc.get_threshold()[1:])
    body = json.dumps({"region": REGIONS[0]}).encode()

    def join(meeting: str, token: str, keyed: bool) -> None:
        headers = {"HTTP_AUTHORIZATION": f"Bearer {token}"}
        if keyed:
            headers["HTTP_IDEMPOTENCY_KEY"] = str(uuid.uuid4())
        status, content = _wsgi_post(app, f"/api/v1/meetings/{meeting}/join", body, headers)
        if status not in (200, 201):
            raise RuntimeError(f"join answered {status}: {content[:300]!r}")

    for number, meeting in enumerate(hot):  # the assignments the reused joins reuse
        join(meeting, tokens[number % len(tokens)], False)

    def reused(count: int, keyed: bool) -> None:
        for number in range(count):
            join(hot[number % len(hot)], tokens[number % len(tokens)], keyed)

    def first(count: int, keyed: bool) -> None:
        for number in range(count):
            join(next(fresh), tokens[number % len(tokens)], keyed)

    collecting = {"since": 0.0, "seconds": 0.0}

    def collection(phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            collecting["since"] = time.process_time()
        else:
            collecting["seconds"] += time.process_time() - collecting["since"]

    gc.callbacks.append(collection)
    reused(joins // 4, False)  # warm-up
    figures: dict[str, float] = {}
    for label, drive, keyed in (("reused", reused, False), ("reused, Idempotency-Key", reused, True),
                                ("first", first, False), ("first, Idempotency-Key", first, True)):
        rounds = []
        collecting["seconds"] = 0.0
        for _ in range(runs):
            started = time.process_time()
            drive(joins, keyed)
            rounds.append((time.process_time() - started) * 1000 / joins)
        figures[label] = statistics.median(rounds)
        figures[f"{label} (best round)"] = min(rounds)
        figures[f"{label}, of which garbage collection"] = collecting["seconds"] * 1000 / (joins * runs)
    print(json.dumps(figures))
    if profile:
        import cProfile
        import pstats

        profiler = cProfile.Profile(time.process_time)
        profiler.enable()
        reused(joins, False)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(60)
        stats.sort_stats("tottime").print_stats(40)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{NAME}", description=__doc__.splitlines()[0])
    parser.add_argument("--joins", type=int, default=400, help="joins per kind and round (default 400)")
    parser.add_argument("--runs", type=int, default=5, help="rounds per kind, the median reported (default 5)")
    parser.add_argument("--profile", action="store_true", help="print a cProfile of reused joins to stderr")
    parser.add_argument("--gc-threshold", type=int, help="the collector's first threshold (Python's default: 700)")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        _child(args.child, args.joins, args.runs, args.profile, args.gc_threshold)
        return 0
    with scratch_database(NAME) as scratch, tempfile.TemporaryDirectory(prefix="bench-join-micro-", dir="/tmp") as tmp:
        work = Path(tmp)
        use_django(scratch)
        (work / "redis").mkdir()
        with private_redis(work / "redis") as redis:
            from django.conf import settings

            settings.REDIS_URL = redis.url
            plan, _ = _setup(scratch, controllers=200, meetings=200, fresh=2 * args.joins * args.runs + 10,
                             users=50, work=work)
            env = scratch.env(
                DEBUG="0", SECRET_KEY=secrets.token_urlsafe(48), LOG_LEVEL="WARNING", ALLOWED_HOSTS="127.0.0.1",
                SECURE_SSL_REDIRECT="0", SIGNING_KEY_ENCRYPTION_KEY=str(settings.SIGNING_KEY_ENCRYPTION_KEY),
                REDIS_URL=redis.url, RATE_LIMIT_JOIN_PER_IP="100000000", RATE_LIMIT_JOIN_PER_PRINCIPAL="100000000",
                HEARTBEAT_STALE_THRESHOLD_SECONDS="3600", MC_ASSIGN_CALLS="0",
            )
            load = os.getloadavg()[0]
            answer = subprocess.run(
                [PYTHON, "-m", f"bench.{NAME}", "--child", str(plan), "--joins", str(args.joins),
                 "--runs", str(args.runs), *(["--profile"] if args.profile else []),
                 *(["--gc-threshold", str(args.gc_threshold)] if args.gc_threshold is not None else [])],
                cwd=ROOT, env=env, check=True, stdout=subprocess.PIPE, text=True,
            )
    figures = json.loads(answer.stdout.strip().splitlines()[-1])
    print(f"Python CPU per join request, in process (median of {args.runs} rounds of {args.joins}; "
          f"load average before {load:.2f}, after {os.getloadavg()[0]:.2f}):")
    for label, value in figures.items():
        print(f"  {label}: {value:.3f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
