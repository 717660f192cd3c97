"""A real gRPC server (the one `manage.py grpcserver` builds) on a loopback port, real service tokens.

The server's worker threads have database connections of their own, so these tests commit their data
(transactional_db) and the server sees it. The `auth` metadata carries a token an MC would hold: one from
POST /api/v1/auth/service/token (client credentials, HTTP Basic) for a credential created as an operator does.
Tokens that the endpoint would never issue (forged, expired, other audiences) come from `issue`.
"""

from __future__ import annotations

import base64
import contextlib
import threading
import uuid
from collections.abc import Iterator
from urllib.parse import urlencode

import grpc
import pytest
from django.conf import settings
from django.db import connections
from django.test import Client

from accounts import blacklist
from accounts.services.service_tokens import CreatedServiceCredential, service_credential_create
from accounts.tokens import token_issue
from controllers.grpc.server import GrpcServer, build_server
from controllers.heartbeats import RECORDERS
from dark_tower.internal.v1 import internal_pb2_grpc
from darktower.metrics import REGISTRY, TALLIES
from tests.beats import recorder_reset

WORKERS = 4  # the grpc_server fixture's worker threads


def metric_sample(name: str, **labels: str) -> float:
    """A sample as a scrape shows it once the server's tally publisher has run (within TALLY_PUBLISH_SECONDS)."""
    TALLIES.publish()
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.fixture(autouse=True)
def roomy_grpc_rate_limits(settings):
    """Edge tests send many calls for one member in a few milliseconds (and many calls at once for the workers);
    test_rate_limits.py and test_admission.py set tight ones."""
    settings.GRPC_RATE_LIMIT_REGISTER_PER_MEMBER = 10_000
    settings.GRPC_HEARTBEAT_BURST = 10_000
    settings.GRPC_MAX_QUEUED_CALLS = 10_000


@contextlib.contextmanager
def running_server(*, workers: int) -> Iterator[GrpcServer]:
    """A server on a free loopback port with `workers` worker threads, and the recorders reset around it."""
    # Worker threads close their connection after every call, so none outlives the test's database.
    db_settings = connections.settings["default"]
    saved_max_age = db_settings["CONN_MAX_AGE"]
    db_settings["CONN_MAX_AGE"] = 0
    for recorder in RECORDERS:
        recorder_reset(recorder)
    server = build_server(bind="127.0.0.1:0", workers=workers)
    server.start()
    yield server
    server.stop(grace=2)
    for recorder in RECORDERS:
        recorder_reset(recorder)
    db_settings["CONN_MAX_AGE"] = saved_max_age


@pytest.fixture
def grpc_server(transactional_db) -> Iterator[GrpcServer]:
    with running_server(workers=WORKERS) as server:
        yield server


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


def endpoint_token(credential: CreatedServiceCredential, *, scope: str | None = None) -> str:
    """An access token from the token endpoint, as an MC gets it (client credentials, HTTP Basic)."""
    basic = base64.b64encode(f"{credential.credential.client_id}:{credential.client_secret}".encode()).decode()
    data = {"grant_type": "client_credentials", **({"scope": scope} if scope else {})}
    # An address of its own, so the endpoint's per-address limit never counts other tests' requests.
    address = f"10.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250}.{uuid.uuid4().int % 250 + 1}"
    response = Client().post("/api/v1/auth/service/token", urlencode(data),
                             content_type="application/x-www-form-urlencoded", HTTP_AUTHORIZATION=f"Basic {basic}",
                             REMOTE_ADDR=address)
    assert response.status_code == 200, response.content
    return response.json()["access_token"]


@pytest.fixture
def service_credential(grpc_server) -> CreatedServiceCredential:
    """A credential allowed both registration scopes, created as `create_service_credential` does."""
    return service_credential_create(name="grpc tests", scopes=["mc:register", "mh:register"])


@pytest.fixture
def auth(service_credential) -> tuple[tuple[str, str]]:
    """Metadata with a token from the token endpoint holding both registration scopes."""
    return bearer(endpoint_token(service_credential))


@pytest.fixture
def fresh_revocation_lookups(monkeypatch):
    """Revocation lookups that stay fresh for the test: its calls come seconds apart on a slow machine, and a
    stale lookup would (rightly) send a heartbeat to a worker thread instead of answering it on the loop."""
    monkeypatch.setattr(blacklist, "LOOKUP_CACHE_SECONDS", 300.0)


@contextlib.contextmanager
def every_worker_busy(server: GrpcServer) -> Iterator[threading.Event]:
    """Every thread of `server` that waits for the database blocked until the yielded event is set (at the latest
    when this ends): its worker threads and its writers (controllers.grpc.batching)."""
    release = threading.Event()
    writers = list(server.service_guard.writers.values())
    started = threading.Barrier(WORKERS + len(writers) + 1)

    def block() -> None:
        started.wait()
        release.wait(30)

    blocked = [server.executor.submit(block) for _ in range(WORKERS)]
    blocked += [writer.executor.submit(block) for writer in writers]
    started.wait(10)
    try:
        yield release
    finally:
        release.set()
        for future in blocked:
            future.result(10)
