"""The server `build_server` assembles counts its calls and token validations (darktower.metrics)."""

from __future__ import annotations

import grpc
import pytest
from django.conf import settings

from dark_tower.internal.v1 import internal_pb2 as pb
from darktower.metrics import REGISTRY, TALLIES, TALLY_PUBLISH_SECONDS
from tests.controllers.grpc.conftest import bearer, issue, metric_sample
from tests.faults.processes import wait_for

REGISTER_MC = "/dark_tower.internal.v1.GlobalControllerService/RegisterMC"
REQUEST = pb.RegisterMCRequest(id="mc-metrics-1", region="us-east-1", grpc_endpoint="grpc://mc.internal:50052",
                               max_meetings=10, max_participants=100)


def test_real_calls_are_counted_by_method_and_code_and_tokens_by_outcome(mc_stub, auth):
    calls_ok = metric_sample("darktower_grpc_requests_total", method=REGISTER_MC, code="OK")
    calls_refused = metric_sample("darktower_grpc_requests_total", method=REGISTER_MC, code="UNAUTHENTICATED")
    timed = metric_sample("darktower_grpc_request_duration_seconds_count", method=REGISTER_MC)
    valid = metric_sample("darktower_token_validations_total", outcome="valid")
    expired = metric_sample("darktower_token_validations_total", outcome="expired")

    assert mc_stub.RegisterMC(REQUEST, metadata=auth).accepted
    with pytest.raises(grpc.RpcError):
        mc_stub.RegisterMC(REQUEST, metadata=bearer(issue(lifetime_seconds=-(settings.JWT_CLOCK_SKEW_SECONDS + 60))))

    assert metric_sample("darktower_grpc_requests_total", method=REGISTER_MC, code="OK") == calls_ok + 1
    # grpc.aio sends an aborted call's status from inside abort(): the count follows just after the client saw it.
    wait_for(lambda: metric_sample("darktower_grpc_requests_total", method=REGISTER_MC, code="UNAUTHENTICATED")
             == calls_refused + 1, timeout=5, what="the refused call counted")
    assert metric_sample("darktower_grpc_request_duration_seconds_count", method=REGISTER_MC) == timed + 2
    assert metric_sample("darktower_token_validations_total", outcome="valid") == valid + 1
    assert metric_sample("darktower_token_validations_total", outcome="expired") == expired + 1


def test_the_server_publishes_its_tallies_by_itself(grpc_server, mc_stub, auth):
    """No test hand-publishes here: the server's publisher thread adds the call within TALLY_PUBLISH_SECONDS."""
    TALLIES.publish()
    before = REGISTRY.get_sample_value("darktower_grpc_requests_total", {"method": REGISTER_MC, "code": "OK"}) or 0.0

    assert mc_stub.RegisterMC(REQUEST, metadata=auth).accepted

    assert TALLIES.publishing
    wait_for(lambda: REGISTRY.get_sample_value("darktower_grpc_requests_total", {"method": REGISTER_MC, "code": "OK"})
             == before + 1, timeout=TALLY_PUBLISH_SECONDS + 5, what="the call published")
