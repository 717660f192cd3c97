"""The restarting fleet of bench 6, run as its own process: every MC registers at once, then beats.

Each of --count MCs (ids <prefix>-000000 ...) is one coroutine that does what a well-behaved MC does after a
restart: RegisterMC, then FastHeartbeat HEALTHY as soon as it is registered. An answer RESOURCE_EXHAUSTED is
obeyed: the MC waits the seconds its `retry-after` trailing metadata says (1 s when it says nothing) and sends the
call again; every other failure is counted and retried after 1 s, so a run always ends with every MC healthy or
with the --deadline passed. They all start together, each on one of --channels connections (MCs are separate
machines; a connection per MC would only measure the client's own connection set-up).

The bearer token comes from the BENCH_TOKEN environment variable. Prints "started" when the first calls go out,
then one JSON line: per call kind the answers by status code and the times (seconds after the start) of the
first and last OK answer, the waits obeyed, and whether every MC finished.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc

REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")


class Tally:
    """The answers of one call kind."""

    def __init__(self) -> None:
        self.codes: Counter[str] = Counter()
        self.first_ok: float | None = None
        self.last_ok = 0.0
        self.retry_after_waits: Counter[int] = Counter()

    def as_dict(self) -> dict:
        return {"codes": dict(self.codes), "first_ok": self.first_ok, "last_ok": self.last_ok,
                "retry_after_waits": {str(seconds): count for seconds, count in sorted(self.retry_after_waits.items())}}


def _retry_after(error: grpc.aio.AioRpcError) -> int | None:
    for key, value in error.trailing_metadata() or ():
        if key == "retry-after":
            try:
                return max(1, int(value))
            except ValueError:
                return None
    return None


async def until_ok(send: Callable[..., Awaitable[Any]], tally: Tally, start: float, call_timeout: float) -> None:
    """Send one call until it answers OK, obeying retry-after."""
    while True:
        try:
            await send(timeout=call_timeout)
        except grpc.aio.AioRpcError as error:
            tally.codes[error.code().name] += 1
            wait = _retry_after(error) if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED else None
            if wait is not None:
                tally.retry_after_waits[wait] += 1
            await asyncio.sleep(wait or 1.0)
            continue
        now = time.perf_counter() - start
        tally.codes["OK"] += 1
        tally.first_ok = now if tally.first_ok is None else min(tally.first_ok, now)
        tally.last_ok = max(tally.last_ok, now)
        return


async def run(args: argparse.Namespace) -> dict:
    token = os.environ.get("BENCH_TOKEN", "")
    metadata = (("authorization", f"Bearer {token}"),) if token else ()
    channels = [
        grpc.aio.insecure_channel(args.target, options=[("grpc.use_local_subchannel_pool", 1)])
        for _ in range(args.channels)
    ]
    stubs = [internal_pb2_grpc.GlobalControllerServiceStub(channel) for channel in channels]
    registrations, beats = Tally(), Tally()
    finished = 0
    try:
        for channel in channels:
            await asyncio.wait_for(channel.channel_ready(), timeout=30)
        start = time.perf_counter()

        async def member(index: int) -> None:
            nonlocal finished
            stub = stubs[index % len(stubs)]
            controller_id = f"{args.prefix}-{index:06d}"
            register = pb.RegisterMCRequest(
                id=controller_id, region=REGIONS[index % len(REGIONS)],
                grpc_endpoint=f"grpc://10.{index // 65536 % 256}.{index // 256 % 256}.{index % 256}:50052",
                max_meetings=100, max_participants=1000,
            )
            beat = pb.FastHeartbeatRequest(
                controller_id=controller_id, health=pb.HEALTHY,
                capacity=pb.ControllerCapacity(max_meetings=100, current_meetings=0, max_participants=1000,
                                               current_participants=0),
            )
            await until_ok(lambda timeout: stub.RegisterMC(register, metadata=metadata, timeout=timeout),
                           registrations, start, args.call_timeout)
            await until_ok(lambda timeout: stub.FastHeartbeat(beat, metadata=metadata, timeout=timeout),
                           beats, start, args.call_timeout)
            finished += 1

        tasks = [asyncio.ensure_future(member(index)) for index in range(args.count)]
        print("started", flush=True)
        done, pending = await asyncio.wait(tasks, timeout=args.deadline)
        for task in pending:
            task.cancel()
        for task in done:
            task.result()  # a bug in this client fails the run rather than hiding in a task
        seconds = time.perf_counter() - start
    finally:
        for channel in channels:
            await channel.close()
    return {"count": args.count, "finished": finished, "seconds": seconds,
            "register": registrations.as_dict(), "beat": beats.as_dict()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fleet_restart_client", description=__doc__)
    parser.add_argument("--target", required=True)
    parser.add_argument("--prefix", default="bench-restart")
    parser.add_argument("--count", type=int, default=20_000, help="MCs restarting")
    parser.add_argument("--channels", type=int, default=8, help="connections the MCs share")
    parser.add_argument("--call-timeout", type=float, default=120.0, help="each call's deadline, seconds")
    parser.add_argument("--deadline", type=float, default=300.0, help="give up after this many seconds")
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(run(args))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
