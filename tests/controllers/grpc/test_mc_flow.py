"""An MC's first minutes, end to end: it obtains a token from our OAuth 2.0 client-credentials endpoint with
a stock client (Authlib), registers over gRPC, heartbeats, and is healthy."""

from __future__ import annotations

import grpc
import pytest
from authlib.integrations.requests_client import OAuth2Session

from accounts.services.service_tokens import service_credential_create
from audit.models import AuditLog
from controllers.models import MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def roomy_rate_limits(settings):
    settings.RATE_LIMIT_TOKEN_PER_IP = 100_000
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 100_000


def test_an_mc_gets_a_token_registers_and_becomes_healthy(live_server, grpc_server):
    created = service_credential_create(name="mc fleet", scopes=["mc:register"])
    client_id = created.credential.client_id
    with OAuth2Session(client_id, created.client_secret, token_endpoint_auth_method="client_secret_basic") as oauth:
        token = oauth.fetch_token(live_server.url + "/api/v1/auth/service/token", grant_type="client_credentials")
    auth = (("authorization", f"Bearer {token['access_token']}"),)

    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        stub = internal_pb2_grpc.GlobalControllerServiceStub(channel)
        registered = stub.RegisterMC(
            pb.RegisterMCRequest(id="mc-flow-1", region="us-east-1", grpc_endpoint="grpc://mc-flow-1.internal:50052",
                                 webtransport_endpoint="https://mc-flow-1.internal:4433", max_meetings=50,
                                 max_participants=500),
            metadata=auth,
        )
        beat = stub.FastHeartbeat(
            pb.FastHeartbeatRequest(controller_id="mc-flow-1", health=pb.HEALTHY,
                                    capacity=pb.ControllerCapacity(max_meetings=50, max_participants=500)),
            metadata=auth,
        )
        with pytest.raises(grpc.RpcError) as no_scope:
            internal_pb2_grpc.MediaHandlerRegistryServiceStub(channel).RegisterMH(
                pb.RegisterMHRequest(handler_id="mh-1"), metadata=auth
            )

    assert registered.accepted and beat.acknowledged
    assert MeetingController.objects.get(pk="mc-flow-1").health_status == "healthy"
    assert AuditLog.objects.filter(target_id="mc-flow-1", metadata__client_id=client_id).exists()
    assert no_scope.value.code() == grpc.StatusCode.PERMISSION_DENIED
