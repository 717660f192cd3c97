"""The gRPC server over TLS (GRPC_TLS_CERT_FILE / GRPC_TLS_KEY_FILE) and mutual TLS (GRPC_TLS_CLIENT_CA_FILE), on
the real server with certificates made here; and the refusal to serve plaintext on a non-loopback address with
DEBUG off unless GRPC_ALLOW_PLAINTEXT says so."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from django.core.management import CommandError, call_command
from grpc_health.v1 import health_pb2, health_pb2_grpc

from controllers.grpc.server import GrpcServer, plaintext_refusal, server_tls_from_settings
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc
from tests.controllers.grpc.tls import TlsFiles, make_tls_files, tls_grpc_server


@pytest.fixture
def tls_files(tmp_path) -> TlsFiles:
    return make_tls_files(tmp_path)


@pytest.fixture
def tls_settings(settings, tls_files):
    settings.GRPC_TLS_CERT_FILE = str(tls_files.server_cert)
    settings.GRPC_TLS_KEY_FILE = str(tls_files.server_key)
    settings.GRPC_TLS_CLIENT_CA_FILE = ""
    return settings


@pytest.fixture
def tls_server(tls_settings, transactional_db) -> Iterator[GrpcServer]:
    with tls_grpc_server(server_tls_from_settings()) as server:
        yield server


@pytest.fixture
def mtls_server(tls_settings, tls_files, transactional_db) -> Iterator[GrpcServer]:
    tls_settings.GRPC_TLS_CLIENT_CA_FILE = str(tls_files.ca)
    with tls_grpc_server(server_tls_from_settings()) as server:
        yield server


def health_check(channel: grpc.Channel) -> int:
    request = health_pb2.HealthCheckRequest(service="")
    return health_pb2_grpc.HealthStub(channel).Check(request, timeout=10).status


def secure(server: GrpcServer, credentials: grpc.ChannelCredentials) -> grpc.Channel:
    return grpc.secure_channel(f"localhost:{server.port}", credentials)


def test_a_call_over_tls_is_served_and_a_plaintext_one_fails(tls_server, tls_files):
    with secure(tls_server, grpc.ssl_channel_credentials(root_certificates=tls_files.read("ca"))) as channel:
        assert health_check(channel) in (health_pb2.HealthCheckResponse.SERVING,
                                         health_pb2.HealthCheckResponse.NOT_SERVING)
        # Our services answer over TLS as over plaintext: a call without a token is refused by the guard.
        with pytest.raises(grpc.RpcError) as refused:
            internal_pb2_grpc.GlobalControllerServiceStub(channel).RegisterMC(pb.RegisterMCRequest(), timeout=10)
        assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED

    with grpc.insecure_channel(f"127.0.0.1:{tls_server.port}") as plaintext, pytest.raises(grpc.RpcError) as failed:
        health_check(plaintext)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_client_that_does_not_trust_the_servers_ca_fails(tls_server, tmp_path):
    (tmp_path / "other").mkdir()
    stranger = make_tls_files(tmp_path / "other")  # another CA
    credentials = grpc.ssl_channel_credentials(root_certificates=stranger.read("ca"))
    with secure(tls_server, credentials) as channel, pytest.raises(grpc.RpcError) as failed:
        health_check(channel)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


def test_mutual_tls_serves_a_client_with_a_certificate_and_refuses_one_without(mtls_server, tls_files):
    with_cert = grpc.ssl_channel_credentials(root_certificates=tls_files.read("ca"),
                                             private_key=tls_files.read("client_key"),
                                             certificate_chain=tls_files.read("client_cert"))
    with secure(mtls_server, with_cert) as channel:
        assert health_check(channel) in (health_pb2.HealthCheckResponse.SERVING,
                                         health_pb2.HealthCheckResponse.NOT_SERVING)

    without_cert = grpc.ssl_channel_credentials(root_certificates=tls_files.read("ca"))
    with secure(mtls_server, without_cert) as channel, pytest.raises(grpc.RpcError) as failed:
        health_check(channel)
    assert failed.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("bind", ["0.0.0.0:50051", "[::]:50051", "10.1.2.3:50051", "grpc.internal:50051", ":50051"])
def test_the_command_refuses_plaintext_on_a_public_address_without_debug(settings, bind):
    settings.DEBUG = False
    settings.GRPC_TLS_CERT_FILE = settings.GRPC_TLS_KEY_FILE = settings.GRPC_TLS_CLIENT_CA_FILE = ""
    settings.GRPC_ALLOW_PLAINTEXT = False

    with pytest.raises(CommandError, match=r"refusing to serve plaintext gRPC on .* set GRPC_TLS_CERT_FILE"):
        call_command("grpcserver", "--bind", bind)


def test_plaintext_is_allowed_on_loopback_with_debug_or_when_said_so(settings):
    settings.GRPC_TLS_CERT_FILE = settings.GRPC_TLS_KEY_FILE = ""
    for bind in ("127.0.0.1:50051", "[::1]:50051", "localhost:50051", "unix:/run/darktower/grpc.sock"):
        assert plaintext_refusal(bind=bind, tls=None, debug=False, allow_plaintext=False) is None
    assert plaintext_refusal(bind="0.0.0.0:50051", tls=None, debug=True, allow_plaintext=False) is None
    assert plaintext_refusal(bind="0.0.0.0:50051", tls=None, debug=False, allow_plaintext=True) is None
    assert plaintext_refusal(bind="0.0.0.0:50051", tls=None, debug=False, allow_plaintext=False) is not None


def test_a_tls_server_may_bind_anywhere(tls_settings):
    tls = server_tls_from_settings()
    assert tls is not None and tls.client_ca is None
    assert plaintext_refusal(bind="0.0.0.0:50051", tls=tls, debug=False, allow_plaintext=False) is None


@pytest.mark.parametrize(
    ("cert", "key", "client_ca", "message"),
    [("server_cert", "", "", "GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE go together"),
     ("", "server_key", "", "GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE go together"),
     ("", "", "ca", "GRPC_TLS_CLIENT_CA_FILE needs GRPC_TLS_CERT_FILE"),
     ("server_cert", "missing", "", "cannot read GRPC_TLS_KEY_FILE")],
)
def test_incomplete_or_unreadable_tls_settings_stop_the_command(settings, tls_files, cert, key, client_ca, message):
    def path(name: str) -> str:
        if name == "missing":
            return str(tls_files.ca.parent / "no-such-file.key")
        return str(getattr(tls_files, name)) if name else ""

    settings.DEBUG = False
    settings.GRPC_TLS_CERT_FILE, settings.GRPC_TLS_KEY_FILE = path(cert), path(key)
    settings.GRPC_TLS_CLIENT_CA_FILE = path(client_ca)

    with pytest.raises(CommandError, match=message):
        call_command("grpcserver", "--bind", "127.0.0.1:0")
