"""Fixtures of the Celery tests: the real gRPC server on a loopback port that tests/grpc uses, a service
credential whose tokens come from the token endpoint, as an MC gets them, and real Celery workers (each with its
embedded beat, on the real broker and this test's database) that a test starts, stops and starts again."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from darktower.celery import DEFAULT_QUEUE, MAINTENANCE_QUEUE
from tests.controllers.grpc.conftest import grpc_server, service_credential  # noqa: F401 (fixtures, found by their names)
from tests.faults.processes import database_url_of_test_db, wait_for

WORKER_START_TIMEOUT_SECONDS = 30


def _stop(process: subprocess.Popen) -> None:
    # The worker runs in its own session: its group id is its pid, which also reaches the embedded beat's
    # child process. SIGTERM is a warm shutdown; SIGKILL if that hangs.
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with contextlib.suppress(ProcessLookupError):  # the group's last process may already be gone
        os.killpg(process.pid, signal.SIGKILL)


@dataclass
class Worker:
    """A running `celery worker -B`; `log` holds its output."""

    process: subprocess.Popen
    log: Path

    def request_stop(self) -> None:
        """Ask for a warm shutdown (SIGTERM to the worker and its beat) without waiting for it."""
        os.killpg(self.process.pid, signal.SIGTERM)

    def running(self) -> bool:
        return self.process.poll() is None

    def stop(self) -> None:
        """Warm shutdown, and wait until the worker and its beat are gone."""
        _stop(self.process)


@pytest.fixture
def start_worker(transactional_db, settings, tmp_path) -> Iterator[Callable[..., Worker]]:
    """Start a real worker with its embedded beat: `start_worker(NAME="value", ...)` adds settings to its
    environment. The beat reads its schedule from this database's django-celery-beat rows: write them first.
    Every worker a test started is stopped in teardown, whatever happened."""
    started: list[Worker] = []

    def start(**environment: str) -> Worker:
        broker = redis.Redis.from_url(settings.REDIS_URL)
        broker.delete(DEFAULT_QUEUE, MAINTENANCE_QUEUE)  # messages an earlier worker's beat left behind
        broker.close()
        env = {
            **os.environ,
            "DATABASE_URL": database_url_of_test_db(),
            "DB_CONN_MAX_AGE": "0",
            "REDIS_URL": settings.REDIS_URL,
            "DEBUG": "1",
            "LOG_FORMAT": "text",
            "LOG_LEVEL": "INFO",
            **environment,
        }
        env.pop("CELERY_BROKER_URL", None)
        env.pop("CELERY_RESULT_BACKEND", None)
        number = len(started) + 1
        log = tmp_path / f"worker-{number}.log"
        command = [
            sys.executable, "-m", "celery", "-A", "darktower", "worker", "-B", "--pool", "solo", "--loglevel", "INFO",
            "--hostname", f"e2e-{uuid.uuid4().hex[:8]}@%h", "--schedule", str(tmp_path / f"beat-schedule-{number}"),
        ]
        with log.open("wb") as output:
            process = subprocess.Popen(
                command, cwd=settings.BASE_DIR, env=env, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        worker = Worker(process, log)
        started.append(worker)
        wait_for(
            lambda: process.poll() is not None or " ready." in log.read_text(),
            timeout=WORKER_START_TIMEOUT_SECONDS, what=f"worker {number} to start", log=log,
        )
        assert process.poll() is None, f"worker {number} exited:\n{log.read_text()[-4000:]}"
        return worker

    try:
        yield start
    finally:
        for worker in started:
            worker.stop()
