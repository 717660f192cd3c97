"""A real gRPC server (the one `manage.py grpcserver` builds) on a loopback port, real service tokens.

The server's worker threads have database connections of their own, so these tests commit their data
(transactional_db) and the server sees it.
"""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from django.conf import settings
from django.db import connections

from accounts.tokens import token_issue
from controllers.grpc.server import GrpcServer, build_server
from controllers.heartbeats import RECORDERS
from dark_tower.internal.v1 import internal_pb2_grpc


@pytest.fixture
def grpc_server(transactional_db) -> Iterator[GrpcServer]:
    # Worker threads close their connection after every call, so none outlives the test's database.
    db_settings = connections.settings["default"]
    saved_max_age = db_settings["CONN_MAX_AGE"]
    db_settings["CONN_MAX_AGE"] = 0
    for recorder in RECORDERS:
        recorder.clear()
    server = build_server(bind="127.0.0.1:0", workers=4)
    server.start()
    yield server
    server.stop(grace=2)
    for recorder in RECORDERS:
        recorder.clear()
    db_settings["CONN_MAX_AGE"] = saved_max_age


@pytest.fixture
def channel(grpc_server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        yield channel


@pytest.fixture
def mc_stub(channel) -> internal_pb2_grpc.GlobalControllerServiceStub:
    return internal_pb2_grpc.GlobalControllerServiceStub(channel)


@pytest.fixture
def mh_stub(channel) -> internal_pb2_grpc.MediaHandlerRegistryServiceStub:
    return internal_pb2_grpc.MediaHandlerRegistryServiceStub(channel)


def issue(*, scopes=("mc:register", "mh:register"), audience=None, lifetime_seconds=300, extra_claims=None) -> str:
    return token_issue(
        subject="svc-test-client",
        audience=audience or settings.JWT_SERVICE_AUDIENCE,
        scopes=scopes,
        lifetime_seconds=lifetime_seconds,
        extra_claims=extra_claims,
    ).token


def bearer(token: str) -> tuple[tuple[str, str]]:
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def auth(grpc_server) -> tuple[tuple[str, str]]:
    """Metadata with a valid token holding both registration scopes."""
    return bearer(issue())
