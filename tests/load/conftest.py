"""A real `manage.py grpcserver` subprocess on the test database, for the load test."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.faults.processes import GrpcServerProcess, database_url_of_test_db


@pytest.fixture
def grpcserver_on_test_db(transactional_db, tmp_path) -> Iterator[GrpcServerProcess]:
    # The server's own defaults (flush interval, workers, connection age, rate limits): what is tested is the
    # product. Only the heartbeat intervals it asks for are shortened, so that 20 s hold many beats per MC.
    env = {"DATABASE_URL": database_url_of_test_db(), "FAST_HEARTBEAT_INTERVAL_MS": "1000",
           "COMPREHENSIVE_HEARTBEAT_INTERVAL_MS": "5000"}
    server = GrpcServerProcess(env=env, log=tmp_path / "grpcserver.log", workers=settings.GRPC_WORKERS)
    try:
        server.start()
        yield server
    finally:
        server.stop()
