"""gRPC core keeps the calls the event loop has not taken in yet in one queue per registered method: a fleet
restarting fills RegisterMC's queue, and the beats of members already running, in FastHeartbeat's, are taken in
without waiting behind it (controllers.grpc.server registers every method of the server)."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator

import grpc
import pytest
from grpc._cython import cygrpc

from controllers.grpc.server import GrpcServer
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc
from tests.controllers.grpc.conftest import WORKERS, bearer, endpoint_token, running_server
from tests.controllers.grpc.test_batched_writes import meeting_controllers_locked, register
from tests.faults.processes import wait_for

pytestmark = pytest.mark.usefixtures("fresh_revocation_lookups")

STORM = 1_000


def calls_arrived() -> int:
    """The calls gRPC core has received on this process's servers, whether or not the event loop took them in
    (channelz, which grpcio-channelz serves, counts them in core)."""
    servers = json.loads(cygrpc.channelz_get_servers(0)).get("server", [])
    return sum(int(server.get("data", {}).get("callsStarted", 0)) for server in servers)


@contextlib.contextmanager
def loop_stalled(server: GrpcServer) -> Iterator[None]:
    """The server's event loop blocked until the block ends: calls arriving meanwhile wait in gRPC core."""
    release = threading.Event()
    stalled = threading.Event()

    def stall() -> None:
        stalled.set()
        release.wait(60)

    server._loop.call_soon_threadsafe(stall)
    stalled.wait(10)
    try:
        yield
    finally:
        release.set()


@pytest.fixture
def server(transactional_db) -> Iterator[GrpcServer]:
    with running_server(workers=WORKERS) as server:
        yield server


def beat(controller_id: str) -> pb.FastHeartbeatRequest:
    return pb.FastHeartbeatRequest(
        controller_id=controller_id, health=pb.HEALTHY,
        capacity=pb.ControllerCapacity(max_meetings=10, current_meetings=0, max_participants=100,
                                       current_participants=0),
    )


def test_a_running_members_beat_is_taken_in_before_a_restarting_fleets_registrations(server, service_credential):
    token = bearer(endpoint_token(service_credential))
    with grpc.insecure_channel(f"127.0.0.1:{server.port}") as channel:
        stub = internal_pb2_grpc.GlobalControllerServiceStub(channel)
        # A member already running: registered, healthy, and its beats answered on the event loop.
        stub.RegisterMC(register("mc-running"), metadata=token, timeout=10)
        stub.FastHeartbeat(beat("mc-running"), metadata=token, timeout=10)
        stub.FastHeartbeat(beat("mc-running"), metadata=token, timeout=10)
        with meeting_controllers_locked():
            with loop_stalled(server):
                before = calls_arrived()
                # The registrations first, then the beat, on one connection: gRPC core receives them in this order.
                storm = [stub.RegisterMC.future(register(f"mc-restart-{index:04d}"), metadata=token, timeout=60)
                         for index in range(STORM)]
                running = stub.FastHeartbeat.future(beat("mc-running"), metadata=token, timeout=60)
                wait_for(lambda: calls_arrived() - before == STORM + 1, timeout=30,
                         what="the registrations and the beat to reach gRPC core")
            assert running.result(timeout=30).acknowledged
            # The registrations the loop took in before it served the beat wait for their writer, which waits for
            # the lock; taken in one queue, all of them would have come first.
            taken_in = server.service_guard.admission.waiting
            assert taken_in < STORM // 2
        for call in storm:
            assert call.result(timeout=60).accepted
