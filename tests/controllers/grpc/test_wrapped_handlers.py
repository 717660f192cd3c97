"""The server's one generic handler (controllers.grpc.server.WrappedHandlers): each method's handler wrapped on
its first call and kept, unknown methods left alone, a method a wrapper refuses answered UNIMPLEMENTED."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from concurrent import futures
from typing import NamedTuple

import grpc
import pytest

from controllers.grpc.guard import GLOBAL_CONTROLLER_SERVICE
from controllers.grpc.server import ServiceGuard, WrappedHandlers
from tests.darktower.metrics.test_grpc import SERVICE, AioServer


class CountingWrapper:
    """Passes every handler through, counting how often each method was wrapped."""

    def __init__(self) -> None:
        self.wrapped: Counter[str] = Counter()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        self.wrapped[method] += 1
        return handler


class Details(NamedTuple):
    method: str
    invocation_metadata: tuple = ()


@pytest.fixture
def counted() -> Iterator[tuple[CountingWrapper, grpc.Channel]]:
    wrapper = CountingWrapper()
    server = AioServer([wrapper])
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield wrapper, channel
    finally:
        server.stop()


def test_a_method_is_wrapped_once_on_its_first_call(counted):
    wrapper, channel = counted
    method = f"/{SERVICE}/Ok"
    assert wrapper.wrapped[method] == 0

    for _ in range(3):
        assert channel.unary_unary(method)(b"ping", timeout=5) == b"ping"

    assert wrapper.wrapped == Counter({method: 1})


def test_an_unknown_method_is_unimplemented_and_never_wrapped(counted):
    wrapper, channel = counted

    for _ in range(2):
        with pytest.raises(grpc.RpcError) as raised:
            channel.unary_unary(f"/{SERVICE}/NoSuchMethod")(b"x", timeout=5)
        assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED

    assert wrapper.wrapped == Counter()
    # The known methods still work, and were not wrapped on the unknown one's account.
    assert channel.unary_unary(f"/{SERVICE}/Ok")(b"ping", timeout=5) == b"ping"
    assert wrapper.wrapped == Counter({f"/{SERVICE}/Ok": 1})


def test_a_method_the_guard_cannot_guard_is_refused_and_the_wrappers_outside_it_never_see_it():
    # A server-streaming method of our service: the guard serves unary calls and beat streams only.
    async def numbers(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        yield b"1"

    outer = CountingWrapper()
    executor = futures.ThreadPoolExecutor(max_workers=1)
    handlers = WrappedHandlers([outer, ServiceGuard(executor)])
    handlers.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        GLOBAL_CONTROLLER_SERVICE, {"Numbers": grpc.unary_stream_rpc_method_handler(numbers)},
    )])
    method = f"/{GLOBAL_CONTROLLER_SERVICE}/Numbers"
    try:
        assert handlers.service(Details(method)) is None
        assert handlers.service(Details(method)) is None
    finally:
        executor.shutdown()

    assert outer.wrapped == Counter()


def test_wrappers_apply_outermost_first():
    order: list[str] = []

    class Tagging:
        def __init__(self, tag: str) -> None:
            self.tag = tag

        def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
            order.append(self.tag)
            return grpc.unary_unary_rpc_method_handler(f"{self.tag}({handler.unary_unary})")

    handlers = WrappedHandlers([Tagging("outer"), Tagging("inner")])
    handlers.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        SERVICE, {"Ok": grpc.unary_unary_rpc_method_handler("servicer")},
    )])

    handler = handlers.service(Details(f"/{SERVICE}/Ok"))

    assert order == ["inner", "outer"]
    assert handler.unary_unary == "outer(inner(servicer))"
