"""Fault-test fixtures: a PostgreSQL and a Redis of the test's own that it may stop and start, and the real
processes (grpcserver, a Celery worker) pointed at them. Never the shared embedded servers."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis
from kombu import Connection

from darktower.celery import DEFAULT_QUEUE, MAINTENANCE_QUEUE, app
from tests.controllers.grpc.conftest import channel, grpc_server, mc_stub  # noqa: F401 (fixtures, used by name)
from tests.faults.processes import (
    ROOT,
    SHUTDOWN_GRACE_SECONDS,
    CeleryWorkerProcess,
    GrpcServerProcess,
    ThrowawayPostgres,
    ThrowawayRedis,
    database_url_of_test_db,
)

# Issued inside the throwaway database, whose signing key the server will verify it with; a subject of its own
# (registration limits are counted per subject in the shared Redis).
_ISSUE_TOKEN = (
    "import uuid; from django.conf import settings; from accounts.tokens import token_issue; "
    "print(token_issue(subject=f'svc-faults-{uuid.uuid4().hex[:12]}', audience=settings.JWT_SERVICE_AUDIENCE, "
    "scopes=['mc:register', 'mh:register'], lifetime_seconds=600).token)"
)


def _manage(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 0, f"manage.py {args[0]} failed:\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result.stdout


@pytest.fixture(scope="module")
def own_postgres() -> Iterator[ThrowawayPostgres]:
    """A PostgreSQL server that this module's tests alone use (and may stop)."""
    postgres = ThrowawayPostgres()
    try:
        postgres.init()
        postgres.start()
        yield postgres
    finally:
        postgres.cleanup()


@dataclass
class ServerOnOwnPostgres:
    server: GrpcServerProcess
    postgres: ThrowawayPostgres
    token: str


@pytest.fixture(scope="module")
def grpcserver_on_own_postgres(own_postgres, tmp_path_factory) -> Iterator[ServerOnOwnPostgres]:
    """`manage.py grpcserver` on a migrated own_postgres, and a service token its database signed."""
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1",
           "DATABASE_URL": own_postgres.url()}
    _manage(env, "migrate", "--noinput", "-v", "0")
    token = _manage(env, "shell", "-c", _ISSUE_TOKEN).strip().splitlines()[-1]
    # Intervals of 1 s / 5 s: the heartbeat rate limit follows them, and the test beats about that fast.
    server = GrpcServerProcess(
        env={"DATABASE_URL": own_postgres.url(), "FAST_HEARTBEAT_INTERVAL_MS": "1000",
             "COMPREHENSIVE_HEARTBEAT_INTERVAL_MS": "5000"},
        log=tmp_path_factory.mktemp("grpcserver") / "grpcserver.log",
    )
    try:
        server.start()
        yield ServerOnOwnPostgres(server, own_postgres, token)
    finally:
        server.stop()


@pytest.fixture
def grpcserver_on_test_db(transactional_db, tmp_path) -> Iterator[GrpcServerProcess]:
    """`manage.py grpcserver` on the test database, 8 workers, a short shutdown grace, 1 s heartbeats."""
    server = GrpcServerProcess(
        env={"DATABASE_URL": database_url_of_test_db(), "GRPC_SHUTDOWN_GRACE_SECONDS": str(SHUTDOWN_GRACE_SECONDS),
             "FAST_HEARTBEAT_INTERVAL_MS": "1000", "COMPREHENSIVE_HEARTBEAT_INTERVAL_MS": "5000"},
        log=tmp_path / "grpcserver.log", workers=8,
    )
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def own_redis() -> Iterator[ThrowawayRedis]:
    """A Redis server that this test alone uses (and may stop)."""
    server = ThrowawayRedis()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()


@pytest.fixture
def worker_on_own_redis(transactional_db, own_redis, tmp_path) -> Iterator[CeleryWorkerProcess]:
    """A real Celery worker on the test database with the test's own Redis as broker: no other run's worker can
    take its tasks, and stopping that Redis touches nobody else."""
    with redis.Redis.from_url(own_redis.url) as client:
        client.delete(DEFAULT_QUEUE, MAINTENANCE_QUEUE)
    # A long sweep interval: sweeps this test sends minutes apart are never taken for a gap in the schedule.
    worker = CeleryWorkerProcess(
        env={"DATABASE_URL": database_url_of_test_db(), "REDIS_URL": own_redis.url, "DB_CONN_MAX_AGE": "0",
             "STALE_SWEEP_INTERVAL_SECONDS": "600"},
        log=tmp_path / "worker.log",
    )
    try:
        worker.start()
        yield worker
    finally:
        worker.stop()


@pytest.fixture
def send_task(own_redis):
    """send_task(name) publishes a task to own_redis (the broker of worker_on_own_redis), as the beat would."""

    def send(name: str) -> None:
        # kombu names unix sockets redis+socket://
        with Connection(f"redis+socket://{own_redis.socket}") as connection:
            app.send_task(name, connection=connection)

    return send
