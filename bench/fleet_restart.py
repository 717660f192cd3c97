"""Bench 6: a fleet restarting. --controllers MCs register on one credential all at once, each beats as soon as it is
registered (pending -> healthy), against `manage.py grpcserver` (one process, or --processes sharing the port as
the README's production layout runs it), while another fleet already running keeps beating.

Set-up in a scratch database: a steady fleet of --steady healthy MCs (inserted in SQL, owned by a credential of
their own) and two real service tokens. grpcserver runs as deployed (DEBUG off, the default rate limits and
worker threads unless --register-limit says otherwise). Two clients, each its own process:

- bench/heartbeat_client.py: the steady fleet's FastHeartbeats on their schedule (--steady-rate calls/s, open
  loop, each latency from its scheduled start), once alone (its p99 without the storm) and once while the storm
  runs (its window starts with the storm);
- bench/fleet_restart_client.py: the restarting fleet, one coroutine per MC: RegisterMC, then FastHeartbeat,
  obeying RESOURCE_EXHAUSTED's retry-after.

Reported: the time until every restarted MC is healthy (its last first beat answered: a first beat is answered
once its transition committed), registrations/s and first-beat transitions/s over their spans, the answers by
status code (only OK and RESOURCE_EXHAUSTED are allowed), the transition, audit and outbox rows of the restarted
fleet against what each MC must have left (registered: a transition, an audit row and an outbox event;
first beat: a transition, an audit row and an outbox event), and the steady fleet's p99 beside its p99 alone.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import (
    PYTHON,
    ROOT,
    Result,
    Scratch,
    argument_parser,
    finish,
    free_port,
    load_note,
    scratch_database,
    server_version,
    use_django,
)
from bench.heartbeat_ingestion import Server, _start, _stop

NAME = "fleet_restart"
PREFIX = "bench-restart"
STEADY_PREFIX = "bench-steady"
FLEET_CLIENT = "svc-fleet"
STEADY_CLIENT = "svc-steady"
TARGET_SECONDS = 60.0
ALLOWED_CODES = {"OK", "RESOURCE_EXHAUSTED"}
# The connections the restarting MCs share (MCs are separate machines; one connection each would measure the
# client's own connection set-up).
STORM_CHANNELS = 8

_STEADY_FLEET = """
INSERT INTO meeting_controllers
    (controller_id, region, endpoint, grpc_endpoint, max_meetings, max_participants, health_status, last_heartbeat_at,
     owner_client_id)
SELECT %(prefix)s || '-' || lpad(i::text, 6, '0'), 'us-east-1', 'grpc://10.1.0.1:50052', 'grpc://10.1.0.1:50052',
       100, 1000, 'healthy', now(), %(owner)s
FROM generate_series(0, %(n)s - 1) i
"""

# What the restarted fleet left, per MC and in all (`like`: its ids).
_ROWS = """
SELECT
  (SELECT count(*) FROM meeting_controllers WHERE controller_id LIKE %(like)s AND health_status = 'healthy'),
  (SELECT count(*) FROM controller_health_transitions
   WHERE component_id LIKE %(like)s AND reason = 'registered' AND from_status IS NULL AND to_status = 'pending'),
  (SELECT count(*) FROM controller_health_transitions
   WHERE component_id LIKE %(like)s AND reason = 'heartbeat' AND from_status = 'pending' AND to_status = 'healthy'),
  (SELECT count(*) FROM controller_health_transitions WHERE component_id LIKE %(like)s),
  (SELECT count(DISTINCT component_id) FROM controller_health_transitions WHERE component_id LIKE %(like)s),
  (SELECT count(*) FROM audit_logs WHERE target_id LIKE %(like)s AND action = 'register'
   AND event_type = 'controller_registered'),
  (SELECT count(*) FROM audit_logs WHERE target_id LIKE %(like)s AND action = 'heartbeat'
   AND event_type = 'controller_healthy'),
  (SELECT count(*) FROM audit_logs WHERE target_id LIKE %(like)s),
  (SELECT count(*) FROM outbox_events WHERE aggregate_id LIKE %(like)s AND event_type = 'controller_registered'),
  (SELECT count(*) FROM outbox_events WHERE aggregate_id LIKE %(like)s AND event_type = 'controller_healthy'
   AND payload->>'from_status' = 'pending' AND payload->>'reason' = 'heartbeat'),
  (SELECT count(*) FROM outbox_events WHERE aggregate_id LIKE %(like)s)
"""
_ROW_NAMES = ("healthy MCs", "registered transitions", "first-beat transitions", "transitions in all",
              "MCs with transitions", "register audit rows", "first-beat audit rows", "audit rows in all",
              "registered outbox events", "first-beat outbox events", "outbox events in all")


def _expected(count: int) -> dict[str, int]:
    return {"healthy MCs": count, "registered transitions": count, "first-beat transitions": count,
            "transitions in all": 2 * count, "MCs with transitions": count, "register audit rows": count,
            "first-beat audit rows": count, "audit rows in all": 2 * count, "registered outbox events": count,
            "first-beat outbox events": count, "outbox events in all": 2 * count}


def _rows(scratch: Scratch) -> dict[str, int]:
    with scratch.connect() as conn:
        found = conn.execute(_ROWS, {"like": f"{PREFIX}-%"}).fetchone()
    return dict(zip(_ROW_NAMES, (int(value) for value in found), strict=True))


def _waits(*tallies: dict[str, int]) -> str:
    """The retry-after waits the storm's MCs obeyed: how many, their median and longest (seconds)."""
    waits = sorted(int(seconds) for tally in tallies for seconds, n in tally.items() for _ in range(n))
    if not waits:
        return "none"
    return f"{len(waits):,}; {waits[len(waits) // 2]} / {waits[-1]}"


def _processes(count: int) -> str:
    return "one grpcserver process" if count == 1 else f"{count} grpcserver processes sharing the port"


def _steady(target: str, *, token: str, count: int, rate: float, duration: float) -> subprocess.Popen:
    """The steady fleet's client, started; it prints "measuring" when its window starts, then its JSON."""
    command = [PYTHON, "-m", "bench.heartbeat_client", "--target", target, "--prefix", STEADY_PREFIX,
               "--count", str(count), "--rate", str(rate), "--in-flight", "1024", "--duration", str(duration),
               "--warmup", "1"]
    client = subprocess.Popen(command, cwd=ROOT, env={**os.environ, "BENCH_TOKEN": token},
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert client.stdout is not None
    if client.stdout.readline().strip() != "measuring":
        client.kill()
        raise RuntimeError(f"steady client failed before measuring:\n{client.communicate()[1][-3000:]}")
    return client


def _result(client: subprocess.Popen, label: str, timeout: float) -> dict:
    out, err = client.communicate(timeout=timeout)
    if client.returncode != 0:
        raise RuntimeError(f"{label} failed:\n{err[-3000:]}")
    return json.loads(out.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--controllers", type=int, default=20_000, help="MCs restarting (default 20,000)")
    parser.add_argument("--steady", type=int, default=2_000, help="MCs of the fleet already running (default 2,000)")
    parser.add_argument("--steady-rate", type=float, default=200,
                        help="the steady fleet's FastHeartbeats per second (default 200: one per MC every 10 s)")
    parser.add_argument("--steady-duration", type=float, default=30,
                        help="seconds the steady fleet's p99 is measured over, alone and from the storm's start")
    parser.add_argument("--register-limit", type=int, default=None,
                        help="GRPC_RATE_LIMIT_REGISTER_PER_CLIENT for the server (default: the setting's default)")
    parser.add_argument("--window", type=int, default=None,
                        help="RATE_LIMIT_WINDOW_SECONDS for the server (default: the setting's default)")
    parser.add_argument("--deadline", type=float, default=600, help="the storm client gives up after this long")
    parser.add_argument("--storm-channels", type=int, default=STORM_CHANNELS,
                        help=f"connections the restarting MCs share (default {STORM_CHANNELS})")
    parser.add_argument("--processes", type=int, default=1,
                        help="grpcserver processes sharing the port (SO_REUSEPORT spreads the connections over them)")
    args = parser.parse_args(argv)
    if args.quick:
        # A per-credential limit below the fleet, in a short window: some registrations are refused and retried
        # after their retry-after, so the smoke covers that path too.
        args.controllers, args.steady, args.steady_rate, args.steady_duration = 300, 100, 50, 2
        args.register_limit, args.window, args.deadline = args.register_limit or 100, args.window or 2, 60

    result = Result(name=NAME, title="Bench 6: fleet restart (RegisterMC, then a first FastHeartbeat, all at once)",
                    headers=["measure", "value", "expected / limit"])
    with scratch_database(NAME, prefix=args.db_prefix) as scratch, tempfile.TemporaryDirectory() as logs:
        use_django(scratch)
        from django.conf import settings

        from accounts.tokens import token_issue

        with scratch.connect() as conn:
            conn.execute(_STEADY_FLEET, {"prefix": STEADY_PREFIX, "n": args.steady, "owner": STEADY_CLIENT})
            conn.execute("VACUUM ANALYZE meeting_controllers")
        tokens = {
            client_id: token_issue(subject=client_id, audience=settings.JWT_SERVICE_AUDIENCE, scopes=["mc:register"],
                                   lifetime_seconds=3600).token
            for client_id in (FLEET_CLIENT, STEADY_CLIENT)
        }
        limits = {
            "GRPC_RATE_LIMIT_REGISTER_PER_CLIENT": args.register_limit or settings.GRPC_RATE_LIMIT_REGISTER_PER_CLIENT,
            "RATE_LIMIT_WINDOW_SECONDS": args.window or settings.RATE_LIMIT_WINDOW_SECONDS,
        }
        env = scratch.env(DEBUG="0", SECRET_KEY=secrets.token_urlsafe(48), LOG_LEVEL="WARNING",
                          SIGNING_KEY_ENCRYPTION_KEY=str(settings.SIGNING_KEY_ENCRYPTION_KEY),
                          **{name: str(value) for name, value in limits.items()})
        workers, queued_limit = settings.GRPC_WORKERS, settings.GRPC_MAX_QUEUED_CALLS
        bind_port = free_port() if args.processes > 1 else 0
        command = [PYTHON, "manage.py", "grpcserver", "--bind", f"127.0.0.1:{bind_port}", "--workers", str(workers),
                   "--processes", str(args.processes)]
        process, port, log = _start(command, env, Path(logs), "grpcserver", listeners=args.processes)
        server = Server([process], port, [log])
        target = f"127.0.0.1:{port}"
        try:
            steady = {"count": args.steady, "rate": args.steady_rate, "duration": args.steady_duration}
            alone = _result(_steady(target, token=tokens[STEADY_CLIENT], **steady), "steady client",
                            args.steady_duration + 60)
            load_before = os.getloadavg()
            beside = _steady(target, token=tokens[STEADY_CLIENT], **steady)
            storm_client = subprocess.Popen(
                [PYTHON, "-m", "bench.fleet_restart_client", "--target", target, "--prefix", PREFIX,
                 "--count", str(args.controllers), "--deadline", str(args.deadline),
                 "--channels", str(args.storm_channels)],
                cwd=ROOT, env={**os.environ, "BENCH_TOKEN": tokens[FLEET_CLIENT]},
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            during = _result(beside, "steady client during the storm", args.steady_duration + args.deadline + 60)
            storm = _result(storm_client, "storm client", args.deadline + 120)
            load_after = os.getloadavg()
        finally:
            _stop(server)
        rows = _rows(scratch)
        postgres = server_version(scratch)

    count = args.controllers
    register, beat = storm["register"], storm["beat"]
    all_healthy = beat["last_ok"] if storm["finished"] == count else float("nan")
    register_span = register["last_ok"] or float("nan")
    beat_span = (beat["last_ok"] - beat["first_ok"]) if beat["first_ok"] is not None else float("nan")
    codes = {kind: storm[kind]["codes"] for kind in ("register", "beat")}
    unexpected = {kind: {code: n for code, n in found.items() if code not in ALLOWED_CODES}
                  for kind, found in codes.items()}
    expected = _expected(count)
    rows_ok = rows == expected
    steady_codes_ok = set(alone["codes"]) == {"OK"} and set(during["codes"]) == {"OK"}

    result.add("MCs restarting / finished", f"{count:,} / {storm['finished']:,}", f"{count:,}")
    result.add("time until all healthy (s)", all_healthy, f"< {TARGET_SECONDS:.0f}")
    result.add("registrations/s (all registered in s)", f"{count / register_span:,.0f} ({register_span:.1f})", "-")
    result.add("first-beat transitions/s (first to last, s)",
               f"{count / beat_span:,.0f} ({beat_span:.1f})" if beat_span > 0 else "-", "-")
    result.add("RegisterMC answers", ", ".join(f"{code} {n:,}" for code, n in sorted(codes["register"].items())),
               "OK, RESOURCE_EXHAUSTED")
    result.add("FastHeartbeat answers", ", ".join(f"{code} {n:,}" for code, n in sorted(codes["beat"].items())),
               "OK, RESOURCE_EXHAUSTED")
    result.add("retry-after obeyed (times; median / max s)",
               _waits(register["retry_after_waits"], beat["retry_after_waits"]), "-")
    for name in _ROW_NAMES:
        result.add(name, rows[name], expected[name])
    result.add(f"steady fleet p99 ms, alone ({args.steady:,} MCs, {args.steady_rate:,.0f}/s)", alone["p99_ms"], "-")
    result.add("steady fleet p99 ms, during the storm", during["p99_ms"], "-")
    result.add("steady fleet p50 ms, alone / during the storm", f"{alone['p50_ms']:,.1f} / {during['p50_ms']:,.1f}",
               "-")
    result.data.update({
        "controllers": count, "steady": args.steady, "limits": limits, "workers": workers,
        "processes": args.processes, "storm": storm,
        "steady_alone": alone, "steady_during": during, "rows": rows, "rows_expected": expected, "rows_ok": rows_ok,
        "unexpected_codes": unexpected, "steady_codes_ok": steady_codes_ok, "all_healthy_seconds": all_healthy,
        "registrations_per_second": count / register_span,
        "transitions_per_second": count / beat_span if beat_span > 0 else None,
        "load_average": [load_before[0], load_after[0]],
    })
    met = storm["finished"] == count and all_healthy < TARGET_SECONDS
    result.notes += [
        f"All {count:,} MCs healthy {all_healthy:.1f} s after they started (the last first beat answered; each is "
        f"answered once its transition committed); target < {TARGET_SECONDS:.0f} s: {'met' if met else 'missed'}.",
        "Answers other than OK and RESOURCE_EXHAUSTED: "
        + ("none" if not any(unexpected.values()) else json.dumps(unexpected)) + ". The steady fleet's answers: "
        + ("all OK" if steady_codes_ok else json.dumps({"alone": alone["codes"], "during": during["codes"]})) + ".",
        f"Transition, audit and outbox rows of the restarted fleet: {'as expected' if rows_ok else 'NOT as expected'}"
        " (each MC: registered = a transition NULL -> pending, an audit row and an outbox event; its first beat = a "
        "transition pending -> healthy, an audit row and an outbox event).",
        f"Server: {_processes(args.processes)}, {workers} worker threads each, GRPC_RATE_LIMIT_REGISTER_PER_CLIENT "
        f"{limits['GRPC_RATE_LIMIT_REGISTER_PER_CLIENT']:,} per RATE_LIMIT_WINDOW_SECONDS "
        f"{limits['RATE_LIMIT_WINDOW_SECONDS']}, GRPC_MAX_QUEUED_CALLS {queued_limit}. The storm's MCs share "
        f"{args.storm_channels} connections; the steady fleet's p99 is "
        f"measured over {args.steady_duration:.0f} s, alone and from the storm's start.",
        load_note(load_before[0], load_after[0]),
    ]
    finish(result, args, postgres=postgres)
    return 0 if storm["finished"] == count and rows_ok and not any(unexpected.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
