"""Bytes that are not our messages, sent to the real gRPC port with a raw unary call (no stubs, no serializers).

Malformed protobuf is refused as grpcio refuses it (INTERNAL: it cannot deserialize the request) or, when the
bytes happen to parse, by our validation (INVALID_ARGUMENT) or lookup (NOT_FOUND); a message over
GRPC_MAX_RECEIVE_MESSAGE_BYTES is RESOURCE_EXHAUSTED before any of our code runs. Never UNKNOWN, never a hang,
and the server serves normally afterwards.
"""

from __future__ import annotations

import grpc
import pytest
from django.conf import settings
from grpc_health.v1 import health_pb2, health_pb2_grpc
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st

from dark_tower.internal.v1 import internal_pb2 as pb

MC_SERVICE = "/dark_tower.internal.v1.GlobalControllerService"
MH_SERVICE = "/dark_tower.internal.v1.MediaHandlerRegistryService"
MC_METHODS = ("RegisterMC", "FastHeartbeat", "ComprehensiveHeartbeat", "NotifyMeetingEnded")
METHODS = [
    *(f"{MC_SERVICE}/{name}" for name in MC_METHODS),
    *(f"{MH_SERVICE}/{name}" for name in ("RegisterMH", "SendLoadReport")),
]
FAST_HEARTBEAT = f"{MC_SERVICE}/FastHeartbeat"
CALL_TIMEOUT_SECONDS = 10
# What grpcio or our validation may answer to bytes that are not a well-formed request of ours.
REFUSALS = {grpc.StatusCode.INTERNAL, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}

VALID_BEAT = pb.FastHeartbeatRequest(
    controller_id="mc-wire-1", health=pb.HEALTHY,
    capacity=pb.ControllerCapacity(max_meetings=10, current_meetings=1, max_participants=100),
).SerializeToString()
MALFORMED = [
    b"\xff",  # a field tag with no end
    b"\x0a\xff\xff\xff\xff\x0f",  # field 1, length-delimited, a length of 4 GiB
    b"\x0a\x05ab",  # field 1 claims 5 bytes, has 2
    b"\x08" + b"\xff" * 11,  # a varint longer than ten bytes
    VALID_BEAT[:-3],  # truncated mid-field
    b"\x0a\x02\xc3\x28",  # field 1 (a string) holding invalid UTF-8
    b"\x0f",  # wire type 7 does not exist
]


def _raw(channel: grpc.Channel, method: str):
    # No serializers: the bytes go on the wire as they are, and the answer comes back as bytes.
    return channel.unary_unary(method)


def _code(channel: grpc.Channel, method: str, payload: bytes, metadata) -> grpc.StatusCode:
    try:
        _raw(channel, method)(payload, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
    except grpc.RpcError as exc:
        return exc.code()
    return grpc.StatusCode.OK


def _still_serves(channel: grpc.Channel, mc_stub, auth) -> None:
    health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
    assert health.status == health_pb2.HealthCheckResponse.SERVING
    mc_stub.RegisterMC(pb.RegisterMCRequest(id="mc-wire-1", region="us-east-1", grpc_endpoint="grpc://mc:1",
                                            max_meetings=10, max_participants=100), metadata=auth)
    assert _code(channel, FAST_HEARTBEAT, VALID_BEAT, auth) == grpc.StatusCode.OK


@pytest.mark.parametrize("payload", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_protobuf_is_refused_and_the_server_keeps_serving(channel, mc_stub, auth, payload):
    for method in METHODS:
        assert _code(channel, method, payload, auth) in REFUSALS, method
    _still_serves(channel, mc_stub, auth)


@hypothesis_settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(payload=st.binary(max_size=512), method=st.sampled_from(METHODS))
def test_random_bytes_are_refused_never_unknown(channel, auth, payload, method):
    # Random bytes may parse as a message (protobuf keeps unknown fields); then validation answers.
    assert _code(channel, method, payload, auth) in REFUSALS | {grpc.StatusCode.OK}


def test_a_message_over_the_receive_limit_is_resource_exhausted(channel, mc_stub, auth):
    limit = settings.GRPC_MAX_RECEIVE_MESSAGE_BYTES
    for method in METHODS:
        assert _code(channel, method, b"\x00" * (limit + 1), auth) == grpc.StatusCode.RESOURCE_EXHAUSTED
    # A well-formed message over the limit too, and one just under it, which reaches our validation.
    oversized = pb.FastHeartbeatRequest(controller_id="m" * limit).SerializeToString()
    assert _code(channel, FAST_HEARTBEAT, oversized, auth) == grpc.StatusCode.RESOURCE_EXHAUSTED
    under = pb.FastHeartbeatRequest(controller_id="m" * (limit - 16)).SerializeToString()
    assert len(under) <= limit
    assert _code(channel, FAST_HEARTBEAT, under, auth) == grpc.StatusCode.INVALID_ARGUMENT
    _still_serves(channel, mc_stub, auth)


def test_unknown_methods_are_unimplemented(channel, mc_stub, auth):
    assert _code(channel, f"{MC_SERVICE}/NoSuchMethod", VALID_BEAT, auth) == grpc.StatusCode.UNIMPLEMENTED
    _still_serves(channel, mc_stub, auth)
