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
must name the same MC (no MC goes unhealthy during the bench). Prints one JSON line, with the MC answered for
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


async def worker(number: int, args: argparse.Namespace, plan: dict, recorder: Recorder, until: float,
                 fresh: Iterator) -> None:
    rng = random.Random(args.seed * 1000 + number)
    connection = Connection(args.host, args.port)
    tokens, meetings = plan.get("tokens", []), plan.get("meetings", [])
    hot = meetings[: args.hot]
    health_head = _head("GET", "/health", args.host, None, None)
    try:
        while time.perf_counter() < until:
            if args.mode == "health":
                head, body, pair = health_head, b"", None
            else:
                picked = _pick(args, rng, meetings, hot, fresh)
                if picked is None:
                    recorder.exhausted = True
                    break
                meeting_id, region = picked
                recorder.fresh_taken += args.pattern == "first"
                body = json.dumps({"region": region}).encode()
                key = str(uuid.uuid4()) if args.idempotency_key else None
                head = _head("POST", f"/api/v1/meetings/{meeting_id}/join", args.host, rng.choice(tokens), len(body),
                             key)
                pair = (meeting_id, region)
            first = pair is not None and pair not in recorder.answers
            started = time.perf_counter()
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
            if recorder.recording:
                recorder.codes[str(status)] += 1
                recorder.latencies.append(elapsed)
                if pair is not None:
                    (recorder.first_latencies if first else recorder.repeat_latencies).append(elapsed)
    finally:
        await connection.close()


async def run(args: argparse.Namespace) -> dict:
    plan = json.loads(Path(args.plan).read_text()) if args.plan else {}
    recorder = Recorder()
    warm_until = time.perf_counter() + args.warmup
    end = warm_until + args.duration

    async def mark() -> None:
        await asyncio.sleep(max(0.0, warm_until - time.perf_counter()))
        recorder.started = time.perf_counter()
        recorder.recording = True

    marker = asyncio.create_task(mark())
    fresh = iter(plan.get("fresh", [])[args.fresh_from:])
    await asyncio.gather(*(worker(number, args, plan, recorder, end, fresh) for number in range(args.connections)))
    await marker
    seconds = time.perf_counter() - recorder.started
    ok = recorder.codes.get("200", 0) + recorder.codes.get("201", 0)

    def ms(values: list[float], p: float) -> float:
        return percentile(values, p) * 1000

    return {
        "mode": args.mode, "connections": args.connections, "seconds": seconds, "calls": sum(recorder.codes.values()),
        "ok": ok, "codes": dict(recorder.codes), "rate": ok / seconds if seconds else 0.0,
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
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--hot", type=int, default=100, help="meetings that take half of the joins")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
