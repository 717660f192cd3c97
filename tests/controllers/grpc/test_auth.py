"""Service-token authentication of the gRPC API: every rejection, over a real server."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings

from accounts.signing import signing_key_active
from accounts.tokens import token_revoke, token_verify
from controllers.models import MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from tests.controllers.grpc.conftest import bearer, issue

REQUEST = pb.RegisterMCRequest(
    id="mc-auth-1", region="us-east-1", grpc_endpoint="grpc://mc.internal:50052", max_meetings=10,
    max_participants=100,
)


def claims(**overrides):
    now = datetime.now(UTC)
    payload = {
        "iss": settings.JWT_ISSUER, "sub": "svc-forger", "aud": settings.JWT_SERVICE_AUDIENCE, "iat": now,
        "nbf": now, "exp": now + timedelta(minutes=5), "jti": uuid.uuid4().hex, "scope": "mc:register mh:register",
    }
    payload.update(overrides)
    return payload


def signed(payload, *, headers=None) -> str:
    """`payload` signed by our active key, as the token endpoint would sign it (kid header unless overridden)."""
    signer = signing_key_active()
    return jwt.encode(payload, signer.private_key, algorithm="EdDSA", headers={"kid": signer.kid, **(headers or {})})


def call(stub, metadata):
    with pytest.raises(grpc.RpcError) as error:
        stub.RegisterMC(REQUEST, metadata=metadata)
    return error.value


def forged_tokens():
    kid = signing_key_active().kid
    return {
        "garbage": "not-a-jwt",
        "alg none": jwt.encode(claims(), None, algorithm="none", headers={"kid": kid}),
        "HS256": jwt.encode(claims(), "a-shared-secret-of-32-bytes-long!", algorithm="HS256", headers={"kid": kid}),
        "unknown kid": jwt.encode(claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA",
                                  headers={"kid": "no-such-key"}),
        "empty kid": jwt.encode(claims(), signing_key_active().private_key, algorithm="EdDSA", headers={"kid": ""}),
        "other signer, known kid": jwt.encode(claims(), Ed25519PrivateKey.generate(), algorithm="EdDSA",
                                              headers={"kid": kid}),
        "expired": issue(lifetime_seconds=-(settings.JWT_CLOCK_SKEW_SECONDS + 60)),
        "wrong audience": issue(audience=settings.JWT_API_AUDIENCE),
        "wrong issuer": jwt.encode(claims(iss="someone-else"), signing_key_active().private_key, algorithm="EdDSA",
                                   headers={"kid": kid}),
        "9 KiB": issue(extra_claims={"padding": "x" * 9 * 1024}),
    }


def test_a_call_without_a_token_is_unauthenticated(mc_stub, grpc_server):
    error = call(mc_stub, ())

    assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    assert error.details() == "missing bearer token"
    assert not MeetingController.objects.exists()


@pytest.mark.parametrize("header", ["Basic dXNlcjpwYXNz", "Bearer ", "token-without-scheme"])
def test_a_non_bearer_authorization_is_unauthenticated(mc_stub, grpc_server, header):
    assert call(mc_stub, (("authorization", header),)).code() == grpc.StatusCode.UNAUTHENTICATED


def test_every_forged_or_unacceptable_token_is_unauthenticated_and_never_echoed(mc_stub, grpc_server, caplog):
    caplog.set_level(logging.DEBUG)
    for name, token in forged_tokens().items():
        error = call(mc_stub, bearer(token))
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED, name
        assert token not in error.details() and len(error.details()) < 100, name
        assert token not in caplog.text, name
    assert not MeetingController.objects.exists()


def test_a_revoked_token_is_unauthenticated(mc_stub, grpc_server):
    token = issue()
    assert mc_stub.RegisterMC(REQUEST, metadata=bearer(token)).accepted
    token_revoke(token_verify(token, audience=settings.JWT_SERVICE_AUDIENCE))

    error = call(mc_stub, bearer(token))

    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, "token revoked")


def test_a_token_without_the_service_scope_is_permission_denied(mc_stub, mh_stub, grpc_server):
    mh_only = bearer(issue(scopes=["mh:register"]))

    error = call(mc_stub, mh_only)
    with pytest.raises(grpc.RpcError) as mh_error:
        mh_stub.RegisterMH(
            pb.RegisterMHRequest(handler_id="mh-1", region="us-east-1", grpc_endpoint="grpc://mh.internal:1",
                                 webtransport_endpoint="https://mh.internal:4433", max_streams=5),
            metadata=bearer(issue(scopes=["mc:register"])),
        )

    assert (error.code(), error.details()) == (grpc.StatusCode.PERMISSION_DENIED, "token lacks the mc:register scope")
    assert mh_error.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert not MeetingController.objects.exists()


def test_every_method_of_both_services_requires_a_token(mc_stub, mh_stub, grpc_server):
    calls = [
        (mc_stub.RegisterMC, REQUEST),
        (mc_stub.FastHeartbeat, pb.FastHeartbeatRequest(controller_id="mc-1")),
        (mc_stub.ComprehensiveHeartbeat, pb.ComprehensiveHeartbeatRequest(controller_id="mc-1")),
        (mc_stub.NotifyMeetingEnded, pb.NotifyMeetingEndedRequest(meeting_id="x", region="us-east-1")),
        (mh_stub.RegisterMH, pb.RegisterMHRequest(handler_id="mh-1")),
        (mh_stub.SendLoadReport, pb.SendLoadReportRequest(handler_id="mh-1")),
    ]
    for method, request in calls:
        with pytest.raises(grpc.RpcError) as error:
            method(request)
        assert error.value.code() == grpc.StatusCode.UNAUTHENTICATED, method


def test_a_token_over_8_kib_is_refused_by_size_before_parsing(mc_stub, grpc_server):
    token = issue(extra_claims={"padding": "x" * 9 * 1024})
    assert len(token) > 9 * 1024

    error = call(mc_stub, bearer(token))

    # Refused by our size check (not cut off by the transport's metadata limit).
    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, "token too large")


def test_each_refusal_says_why(mc_stub, grpc_server):
    kid = signing_key_active().kid
    skew = settings.JWT_CLOCK_SKEW_SECONDS
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    cases = {
        "RS256 with a known kid": (jwt.encode(claims(), rsa_key, algorithm="RS256", headers={"kid": kid}),
                                   "token algorithm not accepted"),
        "no kid header at all": (jwt.encode(claims(), signing_key_active().private_key, algorithm="EdDSA"),
                                 "token has no key id"),
        "nbf beyond the clock skew": (signed(claims(nbf=datetime.now(UTC) + timedelta(seconds=skew + 60))),
                                      "token not yet valid"),
        "8193 bytes": ("x" * 8193, "token too large"),
        # Exactly 8 KiB passes the size check and is refused by the parser instead.
        "8192 bytes of garbage": ("x" * 8192, "malformed token"),
    }
    for name, (token, reason) in cases.items():
        error = call(mc_stub, bearer(token))
        assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, reason), name
    assert not MeetingController.objects.exists()


def token_of_length(length: int) -> str:
    """A valid token of exactly `length` characters: a padding claim, and a header field of 0-2 characters to
    reach the lengths base64url cannot (it never encodes to a length of 4k + 1)."""
    payload = claims()
    for header_pad in range(3):
        for pad in range(length * 3 // 4 - 600, length):
            token = signed({**payload, "padding": "x" * pad}, headers={"pad": "x" * header_pad})
            if len(token) == length:
                return token
            if len(token) > length:
                break
    raise AssertionError(f"no token of {length} characters")


def test_a_token_of_exactly_8_kib_is_accepted(mc_stub, grpc_server):
    token = token_of_length(settings.JWT_MAX_TOKEN_BYTES)
    assert len(token.encode()) == 8192

    assert mc_stub.RegisterMC(REQUEST, metadata=bearer(token)).accepted


def test_nbf_within_the_clock_skew_is_accepted(mc_stub, grpc_server):
    early = datetime.now(UTC) + timedelta(seconds=settings.JWT_CLOCK_SKEW_SECONDS - 10)
    token = signed(claims(nbf=early))

    assert mc_stub.RegisterMC(REQUEST, metadata=bearer(token)).accepted
