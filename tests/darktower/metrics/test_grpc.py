"""The gRPC call metrics on a tiny real grpc.aio server with generic handlers, alone and in front of our service
guard, wrapped as the real server wraps its services (controllers.grpc.server.WrappedHandlers)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
import uvloop

from controllers.grpc.server import HandlerWrapper, ServiceGuard, WrappedHandlers
from darktower.metrics import REGISTRY, CallMetrics
from tests.faults.processes import wait_for

SERVICE = "bench.test.Echo"


async def ok(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    return request


async def not_found(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    await context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
    raise AssertionError("abort raises")


async def crash(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    raise ValueError("a bug")


async def set_code(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    context.set_code(grpc.StatusCode.FAILED_PRECONDITION)
    context.set_details("not now")
    return b""


ECHO_BEHAVIOURS = {"Ok": ok, "NotFound": not_found, "Crash": crash, "SetCode": set_code}


class AioServer:
    """A grpc.aio server with generic handlers (by default the ones above) behind `wrappers`, on an event loop of
    its own thread (as the real one runs)."""

    def __init__(self, wrappers: list[HandlerWrapper], *, service: str = SERVICE,
                 behaviours: dict | None = None) -> None:
        self.loop = uvloop.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.server, self.port = self.call(self._start(wrappers, service, behaviours or ECHO_BEHAVIOURS))

    def call(self, coroutine):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(10)

    async def _start(self, wrappers: list[HandlerWrapper], service: str,
                     behaviours: dict) -> tuple[grpc.aio.Server, int]:
        wrapped = WrappedHandlers(wrappers)
        handlers = {name: grpc.unary_unary_rpc_method_handler(behaviour) for name, behaviour in behaviours.items()}
        wrapped.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(service, handlers)])
        server = grpc.aio.server(handlers=[wrapped], options=[("grpc.so_reuseport", 0)])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        return server, port

    def stop(self) -> None:
        self.call(self.server.stop(None))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join()
        self.loop.close()


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    server = AioServer([CallMetrics()])
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        yield channel
    server.stop()


def calls(method: str, code: str) -> float:
    return REGISTRY.get_sample_value("darktower_grpc_requests_total", {"method": method, "code": code}) or 0.0


def observed(method: str) -> float:
    return REGISTRY.get_sample_value("darktower_grpc_request_duration_seconds_count", {"method": method}) or 0.0


def test_records_ok_calls_with_latency(channel):
    method = f"/{SERVICE}/Ok"
    before, before_latency = calls(method, "OK"), observed(method)

    for _ in range(3):
        assert channel.unary_unary(method)(b"ping", timeout=5) == b"ping"

    assert calls(method, "OK") == before + 3
    assert observed(method) == before_latency + 3
    assert REGISTRY.get_sample_value(
        "darktower_grpc_request_duration_seconds_bucket", {"method": method, "le": "+Inf"}
    ) == before_latency + 3


@pytest.mark.parametrize(
    ("name", "code"),
    [("NotFound", grpc.StatusCode.NOT_FOUND), ("Crash", grpc.StatusCode.UNKNOWN),
     ("SetCode", grpc.StatusCode.FAILED_PRECONDITION)],
)
def test_records_the_final_status_code(channel, name, code):
    method = f"/{SERVICE}/{name}"
    before, before_ok = calls(method, code.name), calls(method, "OK")

    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(method)(b"x", timeout=5)

    assert raised.value.code() == code
    # grpc.aio sends an aborted call's status from inside abort(): the count follows the client's answer.
    wait_for(lambda: calls(method, code.name) == before + 1, timeout=5, what=f"{method} counted as {code.name}")
    assert calls(method, "OK") == before_ok
    assert observed(method) >= 1


def test_unknown_methods_create_no_series(channel):
    method = f"/{SERVICE}/NoSuchMethod"

    with pytest.raises(grpc.RpcError) as raised:
        channel.unary_unary(method)(b"x", timeout=5)

    assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
    assert observed(method) == 0
    assert calls(method, "UNIMPLEMENTED") == 0


def test_sees_the_code_our_service_guard_ends_a_call_with():
    executor = futures.ThreadPoolExecutor(max_workers=1)
    server = AioServer([CallMetrics(), ServiceGuard(executor)])
    method = f"/{SERVICE}/Ok"
    before = calls(method, "UNAUTHENTICATED")
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel, pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(method)(b"x", timeout=5)
    finally:
        server.stop()
        executor.shutdown()

    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert calls(method, "UNAUTHENTICATED") == before + 1
