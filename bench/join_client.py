"""The load generator of bench 2, run as its own process: HTTP/1.1 keep-alive requests over asyncio streams.

A minimal client on purpose (one request line, a few headers, a Content-Length body): the client shares the
machine's two cores with the server, and a full HTTP library would spend more CPU per request than the trivial
endpoint it is compared with. Closed loop: --connections coroutines, each on its own keep-alive connection,
send the next request as soon as the last one answered.

--mode health: GET /health. --mode join: POST /api/v1/meetings/<id>/join {"region": ...} as one of the users
whose access tokens are in the --plan file (JSON: {"tokens": [...], "meetings": [[id, region], ...]}, written
with mode 0600 by bench/join.py; tokens never go on a command line). Half of the joins go to the first
--hot meetings (concurrent joins of one meeting), the rest to any meeting; one in ten asks for another region
than the meeting's home region. --pattern first: every join is the first of its meeting (home region), each
meeting taken once from the plan's "fresh" list, from --fresh-from on; --pattern reused: joins of the --hot
meetings in their home region only, whose assignments an earlier run made. --idempotency-key: each join carries a
new Idempotency-Key.

Correctness, counted during the run: every successful join names an MC; all joins of one (meeting, region)
must name the same MC (no MC goes unhealthy during the bench).

--rate R: an open loop instead, R requests a second on the clock over at most --connections connections, each
request's latency counted from when it was due (so a server falling behind shows in the percentiles instead of
slowing the client down). Prints one JSON line, with the MC answered for
each (meeting, region) and the participant ids answered, for the database checks after the run.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import random
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from bench.common import percentile

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")
# Open loop: how long requests still in flight at the end of the schedule are waited for.
DRAIN_SECONDS = 30.0


class HttpError(Exception):
    pass


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None
        self.opened = 0

    async def request(self, head: bytes, body: bytes = b"") -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
            self.opened += 1
        assert self.reader is not None
        self.writer.write(head + body)
        status_line = await self.reader.readline()
        if not status_line:
            raise HttpError("connection closed")
        status = int(status_line.split(b" ", 2)[1])
        length, close = None, False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"connection" and value.strip().lower() == b"close":
                close = True
        if length is None:
            raise HttpError("response without Content-Length")
        payload = await self.reader.readexactly(length)
        if close:
            await self.close()
        return status, payload

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


class Recorder:
    def __init__(self) -> None:
        self.recording = False
        self.started = 0.0
        self.codes: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.first_latencies: list[float] = []
        self.repeat_latencies: list[float] = []
        # Every success, warm-up included: the database checks count every row the run wrote.
        self.successes = 0
        self.answers: dict[tuple[str, str], str] = {}
        self.participants: set[str] = set()
        self.inconsistent = 0
        self.failures: Counter[str] = Counter()
        # --pattern first ran out of fresh meetings before the end (its rate would then be wrong).
        self.exhausted = False
        self.fresh_taken = 0
        # Open loop: requests the client itself sent more than one interval after they were due (its own CPU fell
        # behind the schedule), and the connections it needed.
        self.late_sends = 0
        self.connections_opened = 0
        # Successes answered within the measured window, whenever they were due (the open loop's achieved rate),
        # and requests still unanswered DRAIN_SECONDS after it (given up, counted as errors).
        self.until = float("inf")
        self.ok_in_window = 0
        self.abandoned = 0
        # (meeting, region) of the joins in flight; after the drain, those given up: the server may have assigned
        # them without the client ever seeing the answer.
        self.in_flight: Counter[tuple[str, str]] = Counter()


def _head(method: str, path: str, host: str, token: str | None, length: int | None, key: str | None = None) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    if token:
        lines.append(f"Authorization: Bearer {token}")
    if key:
        lines.append(f"Idempotency-Key: {key}")
    if length is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {length}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _pick(args: argparse.Namespace, rng: random.Random, meetings: list, hot: list, fresh: Iterator) -> list | None:
    """The (meeting, region) of the next join, or None when the fresh meetings ran out."""
    if args.pattern == "first":
        return next(fresh, None)
    if args.pattern == "reused":
        return rng.choice(hot)
    meeting_id, home = rng.choice(hot) if rng.random() < 0.5 else rng.choice(meetings)
    return [meeting_id, home if rng.random() < 0.9 else rng.choice(REGIONS)]


def _request(args: argparse.Namespace, rng: random.Random, plan: dict, recorder: Recorder,
             fresh: Iterator) -> tuple[bytes, bytes, tuple[str, str] | None] | None:
    """The next request: (head, body, (meeting, region) or None for GET /health); None when the fresh meetings
    ran out."""
    if args.mode == "health":
        return _head("GET", "/health", args.host, None, None), b"", None
    meetings = plan.get("meetings", [])
    picked = _pick(args, rng, meetings, meetings[: args.hot], fresh)
    if picked is None:
        recorder.exhausted = True
        return None
    meeting_id, region = picked
    recorder.fresh_taken += args.pattern == "first"
    body = json.dumps({"region": region}).encode()
    key = str(uuid.uuid4()) if args.idempotency_key else None
    head = _head("POST", f"/api/v1/meetings/{meeting_id}/join", args.host, rng.choice(plan["tokens"]), len(body),
                 key)
    return head, body, (meeting_id, region)


async def _send(connection: Connection, request: tuple[bytes, bytes, tuple[str, str] | None], recorder: Recorder,
                started: float, record: bool | None = None) -> None:
    """Send one request and record its answer; its latency runs from `started` (in the open loop, the moment it
    was due, so that a request kept waiting for a connection or the server counts its wait). `record`: whether
    it is measured (None: when it is answered after the warm-up)."""
    head, body, pair = request
    first = pair is not None and pair not in recorder.answers
    try:
        status, payload = await connection.request(head, body)
    except (OSError, HttpError, asyncio.IncompleteReadError) as exc:
        await connection.close()
        status, payload = 0, type(exc).__name__.encode()
    elapsed = time.perf_counter() - started
    ok = status in (200, 201)
    if ok and pair is not None:
        recorder.successes += 1
        answer = json.loads(payload)
        controller = answer["controller_id"]
        recorder.participants.add(answer["participant"]["participant_id"])
        seen = recorder.answers.setdefault(pair, controller)
        if seen != controller:
            recorder.inconsistent += 1
    elif not ok and len(recorder.failures) < 20:
        recorder.failures[f"{status} {payload[:200].decode(errors='replace')}"] += 1
    # Throughput: every success answered within the measured window, whenever it was due.
    recorder.ok_in_window += ok and recorder.recording and time.perf_counter() <= recorder.until
    if recorder.recording if record is None else record:
        recorder.codes[str(status)] += 1
        recorder.latencies.append(elapsed)
        if pair is not None:
            (recorder.first_latencies if first else recorder.repeat_latencies).append(elapsed)


async def worker(number: int, args: argparse.Namespace, plan: dict, recorder: Recorder, until: float,
                 fresh: Iterator) -> None:
    """Closed loop: one connection, the next request as soon as the last one answered."""
    rng = random.Random(args.seed * 1000 + number)
    connection = Connection(args.host, args.port)
    try:
        while time.perf_counter() < until:
            request = _request(args, rng, plan, recorder, fresh)
            if request is None:
                break
            await _send(connection, request, recorder, time.perf_counter())
    finally:
        await connection.close()


async def open_loop(args: argparse.Namespace, plan: dict, recorder: Recorder, until: float,
                    fresh: Iterator) -> None:
    """Open loop: a request every 1/--rate seconds, on the clock, whether or not the earlier ones answered, over
    at most --connections keep-alive connections (a request due while all are busy waits for one, and that wait
    is in its latency). Requests still in flight at the end are waited for."""
    rng = random.Random(args.seed)
    idle: list[Connection] = []
    slots = asyncio.Semaphore(args.connections)
    opened: list[Connection] = []
    tasks: set[asyncio.Task[None]] = set()

    async def one(request: tuple[bytes, bytes, tuple[str, str] | None], due: float, record: bool) -> None:
        pair = request[2]
        if pair is not None:
            recorder.in_flight[pair] += 1
        await sent(request, due, record)  # a join given up is cancelled here and stays counted in flight
        if pair is not None:
            recorder.in_flight[pair] -= 1

    async def sent(request: tuple[bytes, bytes, tuple[str, str] | None], due: float, record: bool) -> None:
        async with slots:
            connection = idle.pop() if idle else Connection(args.host, args.port)
            if connection not in opened:
                opened.append(connection)
            try:
                await _send(connection, request, recorder, due, record)
            finally:
                idle.append(connection)

    start = time.perf_counter()
    interval = 1.0 / args.rate
    number = 0
    try:
        while True:
            due = start + number * interval
            if due >= until:
                break
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            request = _request(args, rng, plan, recorder, fresh)
            if request is None:
                break
            recorder.late_sends += time.perf_counter() - due > interval
            # Measured: the joins due after the warm-up.
            task = asyncio.create_task(one(request, due, recorder.recording))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            number += 1
        if tasks:
            _, late = await asyncio.wait(set(tasks), timeout=DRAIN_SECONDS)
            for task in late:
                task.cancel()
            recorder.abandoned = len(late)
            if late:
                recorder.codes["unanswered"] += len(late)
    finally:
        recorder.connections_opened = len(opened)
        for connection in opened:
            await connection.close()


async def run(args: argparse.Namespace) -> dict:
    plan = json.loads(Path(args.plan).read_text()) if args.plan else {}
    recorder = Recorder()
    warm_until = time.perf_counter() + args.warmup
    end = warm_until + args.duration
    recorder.until = end

    async def mark() -> None:
        await asyncio.sleep(max(0.0, warm_until - time.perf_counter()))
        recorder.started = time.perf_counter()
        recorder.recording = True
        # The bench starts its CPU meters on this line, not on its own clock: a client that started late on a busy
        # machine would leave them measuring its start-up.
        print("measuring", flush=True)

    marker = asyncio.create_task(mark())
    fresh = iter(plan.get("fresh", [])[args.fresh_from:])
    if args.rate:
        await open_loop(args, plan, recorder, end, fresh)
    else:
        await asyncio.gather(*(worker(number, args, plan, recorder, end, fresh)
                               for number in range(args.connections)))
    await marker
    # The open loop's window is its schedule's (the last answers may come after it ends): its achieved rate is
    # what the server answered per second of the schedule.
    seconds = (end if args.rate else time.perf_counter()) - recorder.started
    ok = recorder.codes.get("200", 0) + recorder.codes.get("201", 0)

    def ms(values: list[float], p: float) -> float:
        return percentile(values, p) * 1000

    return {
        "mode": args.mode, "connections": args.connections, "rate_offered": args.rate,
        "late_sends": recorder.late_sends, "connections_opened": recorder.connections_opened, "seconds": seconds,
        "calls": sum(recorder.codes.values()),
        "ok": ok, "ok_in_window": recorder.ok_in_window, "codes": dict(recorder.codes),
        "rate": (recorder.ok_in_window if args.rate else ok) / seconds if seconds else 0.0,
        "p50_ms": ms(recorder.latencies, 50), "p99_ms": ms(recorder.latencies, 99),
        "p999_ms": ms(recorder.latencies, 99.9),
        "first_join_p50_ms": ms(recorder.first_latencies, 50), "first_join_p99_ms": ms(recorder.first_latencies, 99),
        "first_joins": len(recorder.first_latencies),
        "repeat_join_p50_ms": ms(recorder.repeat_latencies, 50),
        "repeat_join_p99_ms": ms(recorder.repeat_latencies, 99),
        "successes_total": recorder.successes, "pairs_total": len(recorder.answers),
        "inconsistent_answers": recorder.inconsistent, "failures": dict(recorder.failures),
        "exhausted": recorder.exhausted, "fresh_taken": recorder.fresh_taken,
        # For the database checks after the run (bench/join.py drops them from the stored result).
        "answers": [[meeting, region, controller] for (meeting, region), controller in recorder.answers.items()],
        "abandoned_pairs": [[meeting, region] for (meeting, region), count in recorder.in_flight.items() if count],
        "participant_ids": sorted(recorder.participants),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.join_client", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--mode", choices=("health", "join"), required=True)
    parser.add_argument("--plan", help="JSON file with tokens and meetings (join mode)")
    parser.add_argument("--pattern", choices=("mix", "first", "reused"), default="mix")
    parser.add_argument("--fresh-from", type=int, default=0, help="first fresh meeting to use (--pattern first)")
    parser.add_argument("--idempotency-key", action="store_true", help="a new Idempotency-Key on each join")
    parser.add_argument("--connections", type=int, default=16,
                        help="closed loop: connections, each with one request in flight; open loop: at most")
    parser.add_argument("--rate", type=float, default=0.0,
                        help="open loop: requests per second on the clock (default 0: closed loop)")
    parser.add_argument("--hot", type=int, default=100, help="meetings that take half of the joins")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
