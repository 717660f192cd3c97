"""`manage.py grpcserver` as a real process: it serves, and SIGTERM stops it cleanly (exit 0) after writing
the heartbeats it still held in memory."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controllers.models import MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc
from tests.controllers.grpc.conftest import bearer, issue
from tests.faults.processes import database_url_of_test_db, free_port
from tests.locks import wait_until_blocking

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


@pytest.fixture
def grpcserver_process(transactional_db):
    # The flush interval is long so that a coalesced beat is still in memory when SIGTERM arrives.
    env = {**os.environ, "DATABASE_URL": database_url_of_test_db(), "HEARTBEAT_FLUSH_INTERVAL_MS": "5000",
           "GRPC_SHUTDOWN_GRACE_SECONDS": "3", "DJANGO_SETTINGS_MODULE": "darktower.settings"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "grpcserver", "--bind", "127.0.0.1:0", "--workers", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    line = process.stdout.readline()
    match = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
    if not match:
        process.kill()
        pytest.fail(f"grpcserver did not start: {line}{process.stdout.read()}")
    yield process, int(match.group(1))
    if process.poll() is None:
        process.kill()
        process.wait()


def serving(health: health_pb2_grpc.HealthStub) -> bool:
    """Whether the server still answers SERVING (a stopping one answers NOT_SERVING, then refuses calls)."""
    try:
        return health.Check(health_pb2.HealthCheckRequest(), timeout=5).status == health_pb2.HealthCheckResponse.SERVING
    except grpc.RpcError:
        return False


def test_grpcserver_serves_and_stops_cleanly_on_sigterm(grpcserver_process):
    process, port = grpcserver_process
    auth = bearer(issue())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        health = health_pb2_grpc.HealthStub(channel)
        deadline = time.monotonic() + 10
        while health.Check(health_pb2.HealthCheckRequest()).status != health_pb2.HealthCheckResponse.SERVING:
            assert time.monotonic() < deadline, "never SERVING"
            time.sleep(0.1)
        stub = internal_pb2_grpc.GlobalControllerServiceStub(channel)
        stub.RegisterMC(pb.RegisterMCRequest(id="mc-proc-1", region="us-east-1", grpc_endpoint="grpc://mc:1",
                                             max_meetings=10, max_participants=100), metadata=auth)
        capacity = pb.ControllerCapacity(max_meetings=10, current_meetings=1, max_participants=100)
        stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-proc-1", capacity=capacity, health=pb.HEALTHY),
                           metadata=auth)
        capacity.current_meetings = 7
        stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-proc-1", capacity=capacity, health=pb.HEALTHY),
                           metadata=auth)
        # Coalesced: acknowledged, not yet written.
        assert MeetingController.objects.get(pk="mc-proc-1").current_meetings == 1

    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=20)

    assert process.returncode == 0, output
    assert "gRPC server stopped" in output
    assert "Traceback" not in output
    controller = MeetingController.objects.get(pk="mc-proc-1")
    assert (controller.health_status, controller.current_meetings) == ("healthy", 7)


def test_sigterm_lets_a_call_in_flight_finish(grpcserver_process):
    from django.db import transaction

    from tests.factories import make_controller

    process, port = grpcserver_process
    make_controller(controller_id="mc-proc-2")
    auth = bearer(issue())
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = internal_pb2_grpc.GlobalControllerServiceStub(channel)
        request = pb.RegisterMCRequest(id="mc-proc-2", region="eu-west-1", grpc_endpoint="grpc://mc:1",
                                       max_meetings=10, max_participants=100)
        with transaction.atomic():
            # Hold the row: the registration waits for it, in flight, while SIGTERM arrives.
            MeetingController.objects.select_for_update().get(pk="mc-proc-2")
            in_flight = stub.RegisterMC.future(request, metadata=auth)
            assert wait_until_blocking(), "the registration never waited for the row"
            process.send_signal(signal.SIGTERM)
            health = health_pb2_grpc.HealthStub(channel)
            deadline = time.monotonic() + 10
            while serving(health):
                assert time.monotonic() < deadline, "SIGTERM never began the shutdown"
                time.sleep(0.05)
            assert not in_flight.done()
        assert in_flight.result(timeout=10).accepted

    output, _ = process.communicate(timeout=20)
    assert process.returncode == 0, output
    assert MeetingController.objects.get(pk="mc-proc-2").region == "eu-west-1"


def test_processes_share_the_port_serve_and_stop_together(transactional_db):
    port = free_port()
    env = {**os.environ, "DATABASE_URL": database_url_of_test_db(), "GRPC_SHUTDOWN_GRACE_SECONDS": "3",
           "DJANGO_SETTINGS_MODULE": "darktower.settings"}
    process = subprocess.Popen(
        [sys.executable, "manage.py", "grpcserver", "--bind", f"127.0.0.1:{port}", "--workers", "2",
         "--processes", "2"],
        cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        pids = set()
        while len(pids) < 2:
            line = process.stdout.readline()
            assert line, "grpcserver exited before both servers listened"
            match = re.search(rf"listening on 127\.0\.0\.1:{port} .*\(pid (\d+)\)", line)
            if match:
                pids.add(int(match.group(1)))
        assert process.pid not in pids
        auth = bearer(issue())
        # Each channel is one connection; the kernel spreads connections over the two servers.
        channels = [grpc.insecure_channel(f"127.0.0.1:{port}", options=[("grpc.use_local_subchannel_pool", 1)])
                    for _ in range(8)]
        for number, channel in enumerate(channels):
            stub = internal_pb2_grpc.GlobalControllerServiceStub(channel)
            answer = stub.RegisterMC(pb.RegisterMCRequest(
                id=f"mc-procs-{number}", region="us-east-1", grpc_endpoint="grpc://mc:1", max_meetings=10,
                max_participants=100), metadata=auth, timeout=10)
            assert answer.accepted
            channel.close()
        assert MeetingController.objects.filter(controller_id__startswith="mc-procs-").count() == 8

        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()

    assert process.returncode == 0, output
    assert output.count("gRPC server stopped") == 2, output
    assert "all 2 gRPC server processes stopped" in output
    assert "Traceback" not in output
    for pid in pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)


def test_processes_need_a_fixed_port(transactional_db):
    completed = subprocess.run(
        [sys.executable, "manage.py", "grpcserver", "--bind", "127.0.0.1:0", "--processes", "2"],
        cwd=ROOT, env={**os.environ, "DATABASE_URL": database_url_of_test_db()}, capture_output=True, text=True,
        timeout=60,
    )
    assert completed.returncode == 1
    assert "needs a fixed port" in completed.stderr
