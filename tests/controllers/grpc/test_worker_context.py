"""What a blocking servicer sees of its call in a worker thread (controllers.grpc.guard.WorkerContext):
the call's metadata, and an abort that ends the call with its status, as on grpcio's thread-pool server."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest

from controllers.grpc.guard import GLOBAL_CONTROLLER_SERVICE
from controllers.grpc.server import ServiceGuard
from tests.controllers.grpc.conftest import bearer, issue
from tests.darktower.metrics.test_grpc import AioServer

pytestmark = pytest.mark.django_db(transaction=True)


def probe_header(request: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
    return dict(context.invocation_metadata()).get("x-probe", "").encode()


def refuse(request: bytes, context) -> bytes:  # type: ignore[no-untyped-def]
    context.abort(grpc.StatusCode.FAILED_PRECONDITION, "not now")
    raise AssertionError("abort raises")


@pytest.fixture
def channel() -> Iterator[grpc.Channel]:
    executor = futures.ThreadPoolExecutor(max_workers=1)
    # Methods of a real service, so that its scope applies; blocking behaviours, so that they run in the worker.
    server = AioServer([ServiceGuard(executor)], service=GLOBAL_CONTROLLER_SERVICE,
                       behaviours={"ProbeHeader": probe_header, "Refuse": refuse})
    try:
        with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            yield channel
    finally:
        server.stop()
        executor.shutdown()


def test_a_servicer_reads_the_calls_metadata(channel):
    auth = bearer(issue())

    answer = channel.unary_unary(f"/{GLOBAL_CONTROLLER_SERVICE}/ProbeHeader")(
        b"", metadata=(*auth, ("x-probe", "seen")), timeout=10)

    assert answer == b"seen"


def test_a_servicer_abort_ends_the_call_with_its_status(channel):
    with pytest.raises(grpc.RpcError) as refused:
        channel.unary_unary(f"/{GLOBAL_CONTROLLER_SERVICE}/Refuse")(b"", metadata=bearer(issue()), timeout=10)

    assert refused.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert refused.value.details() == "not now"
