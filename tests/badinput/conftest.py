"""Bad-input fixtures: the real gRPC server on a loopback port (tests/controllers/grpc/conftest.py) and a
service token."""

from __future__ import annotations

import pytest

from tests.controllers.grpc.conftest import bearer, channel, grpc_server, mc_stub  # noqa: F401 (fixtures, used by name)
from tests.faults.processes import service_token


@pytest.fixture(autouse=True)
def roomy_heartbeat_limit(settings):
    # The wire tests beat one member after every refused payload; the heartbeat limit is not under test here.
    settings.GRPC_HEARTBEAT_BURST = 10_000


@pytest.fixture
def auth(transactional_db) -> tuple[tuple[str, str]]:
    return bearer(service_token())
