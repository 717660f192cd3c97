"""The load generator of bench 1, run as its own process: FastHeartbeat calls over grpc.aio.

Closed loop (--rate 0): --in-flight coroutines each send the next heartbeat as soon as the last one answered;
the rate is the server's capacity at that concurrency. Open loop (--rate R): calls start on a fixed schedule of
R per second whatever the answers do, and each latency counts from the call's scheduled start (so a server that
falls behind shows it in p99 instead of hiding it by slowing the client down).

Prints "measuring" when the measured window starts (the bench times the server's CPU over it), then the JSON.
The beats of a fleet over StreamHeartbeats are bench/stream_client.cc's: this client's own CPU per call is
already more than the server's.

Controller ids are <prefix>-000000 ... (--count of them), in random order. The bearer token, if any, comes from
the BENCH_TOKEN environment variable (not the command line, which other users can read). Prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections import Counter

import grpc

from bench.common import percentile
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc

CALL_TIMEOUT_SECONDS = 10.0


def requests(prefix: str, count: int, seed: int) -> list[pb.FastHeartbeatRequest]:
    rng = random.Random(seed)
    built = [
        pb.FastHeartbeatRequest(
            controller_id=f"{prefix}-{index:06d}", health=pb.HEALTHY,
            capacity=pb.ControllerCapacity(max_meetings=100, current_meetings=rng.randint(0, 100),
                                           max_participants=1000, current_participants=rng.randint(0, 1000)),
        )
        for index in range(count)
    ]
    rng.shuffle(built)
    return built


class Recorder:
    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self.latencies: list[float] = []
        self.recording = False
        self.started = 0.0

    def add_not_sent(self) -> None:
        if self.recording:
            self.codes["NOT_SENT"] += 1

    def add(self, code: grpc.StatusCode, seconds: float) -> None:
        if self.recording:
            self.codes[code.name] += 1
            self.latencies.append(seconds)


async def call(stub: internal_pb2_grpc.GlobalControllerServiceStub, request: pb.FastHeartbeatRequest,
               metadata: tuple[tuple[str, str], ...], recorder: Recorder, started: float) -> None:
    try:
        await stub.FastHeartbeat(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
        code = grpc.StatusCode.OK
    except grpc.aio.AioRpcError as exc:
        code = exc.code()
    recorder.add(code, time.perf_counter() - started)


async def closed_loop(stubs, pool, metadata, recorder: Recorder, *, in_flight: int, until: float) -> None:  # type: ignore[no-untyped-def]
    async def worker(number: int) -> None:
        stub = stubs[number % len(stubs)]
        index = number
        while time.perf_counter() < until:
            await call(stub, pool[index % len(pool)], metadata, recorder, time.perf_counter())
            index += in_flight

    await asyncio.gather(*(worker(number) for number in range(in_flight)))


async def open_loop(stubs, pool, metadata, recorder: Recorder, *, rate: float, in_flight: int, until: float) -> None:  # type: ignore[no-untyped-def]
    limit = asyncio.Semaphore(in_flight)
    tasks: set[asyncio.Task[None]] = set()
    start = time.perf_counter()
    sent = 0

    async def one(stub, request, scheduled: float) -> None:  # type: ignore[no-untyped-def]
        queued = limit.locked()
        async with limit:
            # A server slower than the schedule leaves calls queued here; one still queued at the end of the run
            # is counted as not sent (the server could not take it in time), so the run ends on time. A call
            # that never queued is sent, even if the client's loop starts it a little after the end.
            if queued and time.perf_counter() >= until:
                recorder.add_not_sent()
                return
            await call(stub, request, metadata, recorder, scheduled)

    while True:
        scheduled = start + sent / rate
        if scheduled >= until:
            break
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(stubs[sent % len(stubs)], pool[sent % len(pool)], scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
        sent += 1
    await asyncio.gather(*tasks)


def measuring() -> None:
    """Tell the bench that the measured window starts now (it times the server's CPU over that window)."""
    print("measuring", flush=True)


async def run(args: argparse.Namespace) -> dict:
    token = os.environ.get("BENCH_TOKEN", "")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    pool = requests(args.prefix, args.count, args.seed)
    channels = [
        grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.channels)
    ]
    stubs = [internal_pb2_grpc.GlobalControllerServiceStub(channel) for channel in channels]
    recorder = Recorder()
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        warm_until = time.perf_counter() + args.warmup
        end = warm_until + args.duration

        async def mark() -> None:
            await asyncio.sleep(max(0.0, warm_until - time.perf_counter()))
            recorder.started = time.perf_counter()
            recorder.recording = True
            measuring()

        marker = asyncio.create_task(mark())
        if args.rate > 0:
            await open_loop(stubs, pool, metadata, recorder, rate=args.rate, in_flight=args.in_flight, until=end)
        else:
            await closed_loop(stubs, pool, metadata, recorder, in_flight=args.in_flight, until=end)
        await marker
        seconds = time.perf_counter() - recorder.started
    finally:
        for channel in channels:
            await channel.close()
    calls = sum(recorder.codes.values())
    return {
        "calls": calls, "ok": recorder.codes.get("OK", 0), "codes": dict(recorder.codes), "seconds": seconds,
        "rate": recorder.codes.get("OK", 0) / seconds if seconds else 0.0,
        "p50_ms": percentile(recorder.latencies, 50) * 1000, "p99_ms": percentile(recorder.latencies, 99) * 1000,
        "p999_ms": percentile(recorder.latencies, 99.9) * 1000,
        "mode": "open" if args.rate > 0 else "closed", "in_flight": args.in_flight, "target_rate": args.rate,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.heartbeat_client", description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--prefix", default="bench-mc")
    parser.add_argument("--count", type=int, default=20_000, help="distinct controller ids")
    parser.add_argument("--in-flight", type=int, default=64)
    parser.add_argument("--rate", type=float, default=0.0, help="calls/s on a fixed schedule; 0 = closed loop")
    parser.add_argument("--channels", type=int, default=4, help="connections (each its own subchannel pool)")
    parser.add_argument("--duration", type=float, default=15.0, help="measured seconds")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds before measuring")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
