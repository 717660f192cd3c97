"""The reference of bench 1: a bare grpcio server that answers FastHeartbeat and does nothing else.

Same generated servicer on grpcio's thread-pool server, no Django, no guard or metrics, no database: the
ceiling a heartbeat handler on this machine can approach (the faster of the two here, so the ratios use it).
With --aio, the same on a grpc.aio server (one uvloop event loop, no thread pool), the design `manage.py
grpcserver` uses, which also answers StreamHeartbeats: every beat acknowledged at once (the thread-pool server
cannot hold a fleet's streams: each would take a thread for its lifetime). Prints `listening on <port>`, serves
until SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator
from concurrent import futures

import grpc
import uvloop

from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc


class NoOp(internal_pb2_grpc.GlobalControllerServiceServicer):
    def FastHeartbeat(
        self, request: pb.FastHeartbeatRequest, context: grpc.ServicerContext
    ) -> pb.FastHeartbeatResponse:
        return pb.FastHeartbeatResponse(acknowledged=True, timestamp=int(time.time()))


class AioNoOp(internal_pb2_grpc.GlobalControllerServiceServicer):
    async def FastHeartbeat(  # type: ignore[override]
        self, request: pb.FastHeartbeatRequest, context: grpc.aio.ServicerContext
    ) -> pb.FastHeartbeatResponse:
        return pb.FastHeartbeatResponse(acknowledged=True, timestamp=int(time.time()))

    async def StreamHeartbeats(  # type: ignore[override]
        self, request_iterator: AsyncIterator[pb.HeartbeatStreamRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.HeartbeatStreamResponse]:
        async for _ in request_iterator:
            yield pb.HeartbeatStreamResponse(fast=pb.FastHeartbeatResponse(acknowledged=True,
                                                                           timestamp=int(time.time())))


async def serve_aio(bind: str) -> None:
    # grpcserver's limit on calls waiting for the loop (controllers/grpc/server.py), so that a fleet's streams
    # opening at once are not cancelled here either.
    server = grpc.aio.server(options=[("grpc.so_reuseport", 0), ("grpc.server.max_pending_requests", 100_000),
                                      ("grpc.server.max_pending_requests_hard_limit", 100_000)])
    internal_pb2_grpc.add_GlobalControllerServiceServicer_to_server(AioNoOp(), server)
    port = server.add_insecure_port(bind)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await server.start()
    print(f"listening on {port}", flush=True)
    await stop.wait()
    await server.stop(2)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.noop_server", description=__doc__)
    parser.add_argument("--bind", default="127.0.0.1:0")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--aio", action="store_true", help="a grpc.aio server instead of the thread pool")
    args = parser.parse_args(argv)
    if args.aio:
        uvloop.run(serve_aio(args.bind))
        return 0
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers), options=[("grpc.so_reuseport", 0)])
    internal_pb2_grpc.add_GlobalControllerServiceServicer_to_server(NoOp(), server)
    port = server.add_insecure_port(args.bind)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    server.start()
    print(f"listening on {port}", flush=True)
    while not stop.wait(1.0):
        pass
    server.stop(2).wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
