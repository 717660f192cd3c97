"""Dark Tower's own MC and MH against this control plane, as their source behaves: the token manager's JSON
request for a credential with a chosen client id, RegisterMC / heartbeats / RegisterMH / SendLoadReport under
their own scope rule (service.write.gc with the service_type), AssignMeetingWithMh on a first join with one or
two media handlers, and the join's meeting (or guest) token accepted as their MC validates it. Every token kind
is refused wherever another kind is expected."""

from __future__ import annotations

import grpc
import pytest
from django.conf import settings
from django.test import Client

from accounts.services.service_tokens import gc_service_token, gc_service_token_forget, service_credential_create
from accounts.tokens import token_issue
from controllers.models import HealthStatus, MediaHandler, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc
from tests.factories import make_meeting, make_user, user_token
from tests.interop.original import GuestTokenClaims, MeetingTokenClaims, OriginalMc, TokenRefused, deserialize

pytestmark = [pytest.mark.mc_calls, pytest.mark.slow]
REGION = "us-east-1"


@pytest.fixture(autouse=True)
def roomy_limits(settings):
    settings.RATE_LIMIT_TOKEN_PER_IP = 100_000
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 100_000
    settings.RATE_LIMIT_JOIN_PER_IP = 100_000
    settings.RATE_LIMIT_JOIN_PER_PRINCIPAL = 100_000
    settings.MC_ASSIGN_TIMEOUT_SECONDS = 5.0
    gc_service_token_forget()
    yield
    gc_service_token_forget()


def token_manager(client_id: str, secret: str) -> str:
    """crates/common/src/token_manager.rs: a JSON body, no scope; access_token, token_type, expires_in required."""
    response = Client().post("/api/v1/auth/service/token", {
        "grant_type": "client_credentials", "client_id": client_id, "client_secret": secret,
    }, content_type="application/json")
    assert response.status_code == 200, response.content
    body = response.json()
    assert isinstance(body["access_token"], str) and body["token_type"] == "Bearer"
    assert isinstance(body["expires_in"], int) and body["expires_in"] > 0
    return body["access_token"]


def bearer(token: str):
    return (("authorization", f"Bearer {token}"),)


@pytest.fixture
def original_mc(live_server):
    mc = OriginalMc(f"{live_server.url}/.well-known/jwks.json").start()
    yield mc
    mc.stop()


def test_an_original_mc_and_mh_register_beat_get_the_assignment_and_admit_the_joiner(
    live_server, grpc_server, original_mc
):
    mc_credential = service_credential_create(name="mc fleet", scopes=["mc:register"], client_id="meeting-controller")
    mh_credential = service_credential_create(name="mh fleet", scopes=["mh:register"], client_id="media-handler")
    mc_token = token_manager("meeting-controller", mc_credential.client_secret)
    mh_token = token_manager("media-handler", mh_credential.client_secret)

    with grpc.insecure_channel(f"127.0.0.1:{grpc_server.port}") as channel:
        gc = internal_pb2_grpc.GlobalControllerServiceStub(channel)
        registry = internal_pb2_grpc.MediaHandlerRegistryServiceStub(channel)
        registered = gc.RegisterMC(pb.RegisterMCRequest(
            id="mc-original-1", region=REGION, grpc_endpoint=original_mc.endpoint,
            webtransport_endpoint="https://localhost:4433", max_meetings=1000, max_participants=10000,
        ), metadata=bearer(mc_token))
        assert registered.accepted and registered.fast_heartbeat_interval_ms > 0
        beat = gc.FastHeartbeat(pb.FastHeartbeatRequest(
            controller_id="mc-original-1", health=pb.HEALTHY,
            capacity=pb.ControllerCapacity(max_meetings=1000, max_participants=10000),
        ), metadata=bearer(mc_token))
        assert beat.acknowledged
        handler = registry.RegisterMH(pb.RegisterMHRequest(
            handler_id="mh-original-1", region=REGION, webtransport_endpoint="https://localhost:4434",
            grpc_endpoint="http://127.0.0.1:50053", max_streams=100,
        ), metadata=bearer(mh_token))
        assert handler.accepted and handler.load_report_interval_ms > 0
        report = registry.SendLoadReport(pb.SendLoadReportRequest(
            handler_id="mh-original-1", current_streams=0, health=pb.HEALTHY,
        ), metadata=bearer(mh_token))
        assert report.acknowledged
        # Each kind's token serves its own service only.
        with pytest.raises(grpc.RpcError) as wrong_service:
            registry.RegisterMH(pb.RegisterMHRequest(handler_id="mh-x", region=REGION), metadata=bearer(mc_token))
        assert wrong_service.value.code() == grpc.StatusCode.PERMISSION_DENIED

    # The first good beat and the first good load report make them healthy, each in its own transaction.
    controller = MeetingController.objects.get(pk="mc-original-1")
    assert (controller.health_status, controller.owner_client_id) == (HealthStatus.HEALTHY, "meeting-controller")
    assert MediaHandler.objects.get(pk="mh-original-1").health_status == HealthStatus.HEALTHY

    host = make_user()
    meeting = make_meeting(host=host, allow_guests=True, max_guests=10)
    joined = Client().post(f"/api/v1/meetings/{meeting.meeting_code}/join", {"region": REGION},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {user_token(host)}")
    assert joined.status_code == 201, joined.content
    body = joined.json()
    (call,) = original_mc.calls
    assert call.meeting_id == str(meeting.pk)
    assert [mh_id for mh_id, _, _ in call.mh_assignments] == ["mh-original-1"]
    assert body["media_handlers"] == [{"handler_id": "mh-original-1", "webtransport_endpoint": "https://localhost:4434",
                                       "grpc_endpoint": "http://127.0.0.1:50053"}]
    claims = original_mc.validate_meeting_token(body["meeting_token"], str(meeting.pk))
    assert (claims.token_type, claims.role, claims.participant_type) == ("meeting", "host", "member")
    assert claims.meeting_org_id == settings.MEETING_ORG_ID
    assert claims.sub == body["participant"]["participant_id"]

    guest = Client().post(f"/api/v1/meetings/{meeting.meeting_code}/guest-token",
                          {"display_name": "Visitor", "region": REGION}, content_type="application/json")
    assert guest.status_code == 201, guest.content
    guest_claims = original_mc.validate_guest_token(guest.json()["meeting_token"], str(meeting.pk))
    assert (guest_claims.display_name, guest_claims.waiting_room) == ("Visitor", False)
    assert len(original_mc.calls) == 1  # the meeting was told once


@pytest.mark.parametrize(("service_type", "scopes", "gc_code", "registry_code"), [
    # Dark Tower's rule: service.write.gc and the service_type of the service called.
    ("meeting-controller", ["service.write.gc"], None, grpc.StatusCode.PERMISSION_DENIED),
    ("media-handler", ["service.write.gc"], grpc.StatusCode.PERMISSION_DENIED, None),
    # Without service.write.gc, or as the GC itself, or with no service_type: nothing.
    ("meeting-controller", ["service.write.mh"], grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.PERMISSION_DENIED),
    ("global-controller", ["service.write.mc", "service.write.gc"], grpc.StatusCode.PERMISSION_DENIED,
     grpc.StatusCode.PERMISSION_DENIED),
])
def test_the_originals_scope_rule_over_grpc(mc_stub, mh_stub, service_type, scopes, gc_code, registry_code):
    token = token_issue(subject="svc-original", audience=None, scopes=scopes, lifetime_seconds=300,
                        extra_claims={"service_type": service_type}).token
    calls = (
        (gc_code, lambda: mc_stub.RegisterMC(pb.RegisterMCRequest(
            id="mc-rule-1", region=REGION, grpc_endpoint="http://127.0.0.1:50052", max_meetings=1,
            max_participants=10), metadata=bearer(token))),
        (registry_code, lambda: mh_stub.RegisterMH(pb.RegisterMHRequest(
            handler_id="mh-rule-1", region=REGION, webtransport_endpoint="https://127.0.0.1:4434",
            grpc_endpoint="http://127.0.0.1:50053", max_streams=10), metadata=bearer(token))),
    )
    for expected, call in calls:
        if expected is None:
            assert call().accepted
        else:
            with pytest.raises(grpc.RpcError) as refused:
                call()
            assert refused.value.code() == expected


def _kinds(meeting_token: str, guest_token: str, service_token: str, host) -> dict[str, str]:
    return {
        "user": user_token(host), "meeting": meeting_token, "guest": guest_token, "service": service_token,
        "gc": gc_service_token(),
        "service with aud": token_issue(subject="svc-x", audience=settings.JWT_SERVICE_AUDIENCE,
                                        scopes=["mc:register"], lifetime_seconds=300).token,
    }


@pytest.mark.django_db(transaction=True)
def test_every_token_kind_is_refused_where_another_is_expected(mc_stub, settings):
    settings.MC_ASSIGN_CALLS = False
    host = make_user()
    meeting = make_meeting(host=host, allow_guests=True)
    from tests.factories import make_controller

    make_controller(region=REGION)
    joined = Client().post(f"/api/v1/meetings/{meeting.meeting_code}/join", {"region": REGION},
                           content_type="application/json", HTTP_AUTHORIZATION=f"Bearer {user_token(host)}")
    guest = Client().post(f"/api/v1/meetings/{meeting.meeting_code}/guest-token",
                          {"display_name": "Visitor", "region": REGION}, content_type="application/json")
    credential = service_credential_create(name="mc", scopes=["mc:register"])
    kinds = _kinds(joined.json()["meeting_token"], guest.json()["meeting_token"],
                   token_manager(credential.credential.client_id, credential.client_secret), host)

    # REST takes user tokens only.
    for kind, token in kinds.items():
        status = Client().get("/api/v1/me", HTTP_AUTHORIZATION=f"Bearer {token}").status_code
        assert status == (200 if kind == "user" else 401), kind
    # gRPC takes service tokens of a member only.
    for kind, token in kinds.items():
        request = pb.RegisterMCRequest(id=f"mc-kind-{kind.replace(' ', '-')}", region=REGION,
                                       grpc_endpoint="http://127.0.0.1:50052", max_meetings=1, max_participants=10)
        if kind in ("service", "service with aud"):
            assert mc_stub.RegisterMC(request, metadata=bearer(token)).accepted
            continue
        with pytest.raises(grpc.RpcError) as refused:
            mc_stub.RegisterMC(request, metadata=bearer(token))
        expected = grpc.StatusCode.PERMISSION_DENIED if kind == "gc" else grpc.StatusCode.UNAUTHENTICATED
        assert refused.value.code() == expected, kind


@pytest.mark.django_db
def test_meeting_and_guest_tokens_decode_into_the_originals_claim_structs(settings):
    """Strict mirrors of MeetingTokenClaims / GuestTokenClaims: every field present with its type; the
    enums' variants; and no audience anywhere."""
    import jwt

    from meetings.models import MeetingParticipant, ParticipantStatus
    from meetings.services.participants import _meeting_token

    meeting = make_meeting(host=make_user())
    member = MeetingParticipant(meeting=meeting, participant_id="00000000-0000-4000-8000-000000000001",
                                role="participant", display_name="M", status=ParticipantStatus.ADMITTED)
    visitor = MeetingParticipant(meeting=meeting, participant_id="00000000-0000-4000-8000-000000000002",
                                 role="guest", display_name="G", status=ParticipantStatus.WAITING)
    member_claims = jwt.decode(_meeting_token(member).token, options={"verify_signature": False})
    guest_claims = jwt.decode(_meeting_token(visitor).token, options={"verify_signature": False})
    assert "aud" not in member_claims and "aud" not in guest_claims
    parsed = deserialize(MeetingTokenClaims, member_claims)
    assert (parsed.token_type, parsed.participant_type, parsed.role) == ("meeting", "member", "participant")
    assert parsed.capabilities == ["audio", "video", "screen_share", "chat"]
    assert parsed.meeting_id == str(meeting.pk) and parsed.home_org_id == settings.MEETING_ORG_ID
    parsed_guest = deserialize(GuestTokenClaims, guest_claims)
    assert (parsed_guest.token_type, parsed_guest.participant_type, parsed_guest.role) == ("guest", "guest", "guest")
    assert parsed_guest.waiting_room is True and parsed_guest.display_name == "G"
    assert parsed_guest.exp - parsed_guest.iat == settings.JWT_MEETING_TOKEN_LIFETIME_SECONDS
    # A guest token is no meeting token to the original (its role is not a MeetingRole).
    with pytest.raises(TokenRefused):
        deserialize(MeetingTokenClaims, guest_claims)
