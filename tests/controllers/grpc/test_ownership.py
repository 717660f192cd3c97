"""A member belongs to the service credential that registered it: another credential, even one holding the same
scope, may not re-register it, beat for it, report its load or end the meetings it hosts."""

from __future__ import annotations

import threading
from io import StringIO

import grpc
import pytest
from django.core.management import CommandError, call_command
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse

from accounts.services.service_tokens import service_credential_create, service_credential_revoke
from audit.models import AuditLog, AuditResult
from controllers.heartbeats import controller_heartbeats, handler_load_reports
from controllers.members import CONTROLLERS
from controllers.models import HealthStatus, MediaHandler, MeetingController
from controllers.services.ownership import member_claim
from dark_tower.internal.v1 import internal_pb2 as pb
from meetings.models import Meeting, MeetingAssignment
from tests.controllers.grpc.conftest import bearer, endpoint_token
from tests.controllers.grpc.test_heartbeat_stream import Stream
from tests.factories import make_controller, make_meeting, make_user
from tests.faults.processes import wait_for
from tests.fixtures.admin import operator_groups, operator_user, viewer_user  # noqa: F401 (fixtures)

pytestmark = pytest.mark.usefixtures("fresh_revocation_lookups")

MC = "mc-own-1"
MH = "mh-own-1"


@pytest.fixture
def other_credential(grpc_server):
    """Another fleet's credential, with the same scopes as `service_credential`."""
    return service_credential_create(name="another fleet", scopes=["mc:register", "mh:register"])


@pytest.fixture
def other_auth(other_credential):
    return bearer(endpoint_token(other_credential))


def register_mc(stub, metadata, *, endpoint: str = "mc1.fleet-a.internal", controller_id: str = MC):
    return stub.RegisterMC(pb.RegisterMCRequest(
        id=controller_id, region="us-east-1", grpc_endpoint=f"grpc://{endpoint}:50052",
        webtransport_endpoint=f"https://{endpoint}:4433", max_meetings=100, max_participants=1000,
    ), metadata=metadata, timeout=10)


def fast(*, health: int = pb.HEALTHY, current: int = 3) -> pb.FastHeartbeatRequest:
    return pb.FastHeartbeatRequest(controller_id=MC, health=health, capacity=pb.ControllerCapacity(
        max_meetings=100, current_meetings=current, max_participants=1000, current_participants=current * 10))


def comprehensive(*, health: int = pb.HEALTHY, cpu: float = 10.0) -> pb.ComprehensiveHeartbeatRequest:
    return pb.ComprehensiveHeartbeatRequest(controller_id=MC, health=health, cpu_usage_percent=cpu,
                                            memory_usage_percent=20.0)


def row(controller_id: str = MC) -> tuple:
    controller = MeetingController.objects.get(pk=controller_id)
    return (controller.grpc_endpoint, controller.webtransport_endpoint, controller.health_status,
            controller.current_meetings, controller.cpu_usage_percent, controller.owner_client_id)


def refused(call) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as raised:
        call()
    return raised.value


def failures(target_id: str, action: str) -> list[AuditLog]:
    return list(AuditLog.objects.filter(target_id=target_id, action=action, result=AuditResult.FAILURE))


@pytest.fixture
def healthy_mc(mc_stub, auth, service_credential) -> str:
    """MC registered by `service_credential`, healthy, its state and owner known to the server."""
    register_mc(mc_stub, auth)
    assert mc_stub.FastHeartbeat(fast(), metadata=auth, timeout=10).acknowledged
    controller_heartbeats.flush()
    assert MeetingController.objects.get(pk=MC).health_status == HealthStatus.HEALTHY
    return MC


# --- meeting controllers: registration and beats -------------------------------------------------------------

def test_the_registering_credential_owns_the_controller(mc_stub, auth, service_credential):
    register_mc(mc_stub, auth)
    assert MeetingController.objects.get(pk=MC).owner_client_id == service_credential.credential.client_id
    # Its own re-registration is still accepted (a restart).
    assert register_mc(mc_stub, auth, endpoint="mc1b.fleet-a.internal").message == "re-registered"
    assert MeetingController.objects.get(pk=MC).grpc_endpoint == "grpc://mc1b.fleet-a.internal:50052"


def test_another_credential_cannot_reregister_a_controller(mc_stub, healthy_mc, other_auth, other_credential,
                                                           service_credential):
    before = row()

    error = refused(lambda: register_mc(mc_stub, other_auth, endpoint="evil.example"))

    assert (error.code(), error.details()) == (
        grpc.StatusCode.PERMISSION_DENIED, "meeting controller is registered by another credential",
    )
    assert row() == before
    assert before[0] == "grpc://mc1.fleet-a.internal:50052"
    (audit,) = failures(MC, "register")
    assert (audit.actor_type, audit.target_type, audit.metadata["client_id"], audit.metadata["owner_client_id"]) == (
        "service", "meeting_controller", other_credential.credential.client_id,
        service_credential.credential.client_id,
    )
    assert "evil" not in str(audit.metadata)  # the refused endpoints are not kept as if they were the MC's
    assert not AuditLog.objects.filter(target_id=MC, action="register", result=AuditResult.SUCCESS,
                                       metadata__client_id=other_credential.credential.client_id).exists()


@pytest.mark.parametrize("health", [pb.HEALTHY, pb.DEGRADED, pb.DRAINING, pb.UNHEALTHY],
                         ids=["steady", "degraded", "draining", "unhealthy"])
def test_another_credential_cannot_beat_for_a_controller(mc_stub, healthy_mc, other_auth, other_credential, health):
    before = row()

    fast_error = refused(lambda: mc_stub.FastHeartbeat(fast(health=health, current=9), metadata=other_auth,
                                                        timeout=10))
    full_error = refused(lambda: mc_stub.ComprehensiveHeartbeat(comprehensive(health=health, cpu=99.0),
                                                                metadata=other_auth, timeout=10))

    for error in (fast_error, full_error):
        assert (error.code(), error.details()) == (
            grpc.StatusCode.PERMISSION_DENIED, "meeting controller is registered by another credential",
        )
    controller_heartbeats.flush()
    assert row() == before
    audits = failures(MC, "heartbeat")
    assert len(audits) == 2
    assert {audit.metadata["client_id"] for audit in audits} == {other_credential.credential.client_id}


@pytest.mark.parametrize("health", [pb.HEALTHY, pb.DRAINING], ids=["steady", "draining"])
def test_another_credential_cannot_beat_for_a_controller_on_a_stream(mc_stub, healthy_mc, other_auth, health):
    before = row()

    error = Stream(mc_stub, other_auth).refused(pb.HeartbeatStreamRequest(fast=fast(health=health, current=9)))

    assert (error.code(), error.details()) == (
        grpc.StatusCode.PERMISSION_DENIED, "meeting controller is registered by another credential",
    )
    controller_heartbeats.flush()
    assert row() == before
    assert len(failures(MC, "heartbeat")) == 1


def test_the_owner_keeps_beating_after_a_refused_stranger(mc_stub, healthy_mc, auth, other_auth):
    refused(lambda: mc_stub.FastHeartbeat(fast(current=9), metadata=other_auth, timeout=10))
    assert mc_stub.FastHeartbeat(fast(current=5), metadata=auth, timeout=10).acknowledged
    stream = Stream(mc_stub, auth)
    assert stream.send(fast=fast(current=6)).fast.acknowledged
    stream.close()
    controller_heartbeats.flush()
    assert MeetingController.objects.get(pk=MC).current_meetings == 6


# --- media handlers: registration and load reports ----------------------------------------------------------

def register_mh(stub, metadata, *, endpoint: str = "mh1.fleet-a.internal"):
    return stub.RegisterMH(pb.RegisterMHRequest(
        handler_id=MH, region="us-east-1", grpc_endpoint=f"grpc://{endpoint}:50053",
        webtransport_endpoint=f"https://{endpoint}:4433", max_streams=500,
    ), metadata=metadata, timeout=10)


def load_report(*, health: int = pb.HEALTHY, streams: int = 3) -> pb.SendLoadReportRequest:
    return pb.SendLoadReportRequest(handler_id=MH, health=health, current_streams=streams, cpu_usage_percent=10.0,
                                    memory_usage_percent=20.0, bandwidth_usage_percent=30.0)


def handler_row() -> tuple:
    handler = MediaHandler.objects.get(pk=MH)
    return (handler.grpc_endpoint, handler.webtransport_endpoint, handler.health_status, handler.current_streams,
            handler.cpu_usage_percent, handler.max_streams)


@pytest.fixture
def healthy_mh(mh_stub, auth) -> str:
    register_mh(mh_stub, auth)
    assert mh_stub.SendLoadReport(load_report(), metadata=auth, timeout=10).acknowledged
    handler_load_reports.flush()
    assert MediaHandler.objects.get(pk=MH).health_status == HealthStatus.HEALTHY
    return MH


def test_another_credential_cannot_reregister_a_media_handler(mh_stub, healthy_mh, other_auth, other_credential,
                                                              service_credential):
    before = handler_row()

    error = refused(lambda: register_mh(mh_stub, other_auth, endpoint="evil.example"))

    assert (error.code(), error.details()) == (
        grpc.StatusCode.PERMISSION_DENIED, "media handler is registered by another credential",
    )
    assert handler_row() == before
    (audit,) = failures(MH, "register")
    assert (audit.target_type, audit.metadata["client_id"], audit.metadata["owner_client_id"]) == (
        "media_handler", other_credential.credential.client_id, service_credential.credential.client_id,
    )


@pytest.mark.parametrize("health", [pb.HEALTHY, pb.DRAINING], ids=["steady", "draining"])
def test_another_credential_cannot_report_load_for_a_media_handler(mh_stub, healthy_mh, auth, other_auth, health):
    before = handler_row()

    error = refused(lambda: mh_stub.SendLoadReport(load_report(health=health, streams=99), metadata=other_auth,
                                                   timeout=10))

    assert (error.code(), error.details()) == (
        grpc.StatusCode.PERMISSION_DENIED, "media handler is registered by another credential",
    )
    handler_load_reports.flush()
    assert handler_row() == before
    assert len(failures(MH, "heartbeat")) == 1
    # The owner's reports still land.
    assert mh_stub.SendLoadReport(load_report(streams=7), metadata=auth, timeout=10).acknowledged
    handler_load_reports.flush()
    assert MediaHandler.objects.get(pk=MH).current_streams == 7


# --- NotifyMeetingEnded --------------------------------------------------------------------------------------

def test_notify_meeting_ended_for_a_meeting_on_another_fleets_controller_is_refused(mc_stub, auth, other_credential):
    controller = make_controller(controller_id="mc-theirs", current_meetings=1,
                                 owner_client_id=other_credential.credential.client_id)
    meeting = make_meeting(host=make_user(), status="active")
    MeetingAssignment.objects.create(meeting=meeting, meeting_controller=controller, region="us-east-1",
                                     assigned_by_gc_id="gc-test")

    error = refused(lambda: mc_stub.NotifyMeetingEnded(pb.NotifyMeetingEndedRequest(
        meeting_id=str(meeting.meeting_id), region="us-east-1"), metadata=auth, timeout=10))

    assert (error.code(), error.details()) == (
        grpc.StatusCode.PERMISSION_DENIED, "the meeting is not hosted by this credential's meeting controllers",
    )
    assert MeetingAssignment.objects.get(meeting=meeting).ended_at is None
    assert Meeting.objects.get(pk=meeting.pk).status == "active"
    assert len(failures(str(meeting.meeting_id), "end_assignment")) == 1


# --- transfer by an operator ---------------------------------------------------------------------------------

def beat_refused_after_flush(stub, metadata) -> grpc.RpcError:  # type: ignore[no-untyped-def]
    """The old owner's beats after a transfer, as a GC process that learnt of it only through its flush sees them:
    one may still be acknowledged from memory (and is then discarded, never written); after the next flush every
    one is refused."""
    try:
        stub.FastHeartbeat(fast(current=41), metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return error
    controller_heartbeats.flush()
    return refused(lambda: stub.FastHeartbeat(fast(current=42), metadata=metadata, timeout=10))


def test_transfer_members_command_moves_a_controller_to_another_credential(
    mc_stub, healthy_mc, auth, other_auth, other_credential, service_credential
):
    old, new = service_credential.credential.client_id, other_credential.credential.client_id
    out = StringIO()

    call_command("transfer_members", "--to", new, MC, stdout=out)

    assert f"{MC}: {old} -> {new}" in out.getvalue()
    assert MeetingController.objects.get(pk=MC).owner_client_id == new
    error = beat_refused_after_flush(mc_stub, auth)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert MeetingController.objects.get(pk=MC).current_meetings == 3  # the old owner's beats were not written
    assert mc_stub.FastHeartbeat(fast(current=8), metadata=other_auth, timeout=10).acknowledged
    assert register_mc(mc_stub, other_auth, endpoint="mc1.fleet-b.internal").accepted
    controller_heartbeats.flush()
    assert row()[0::3] == ("grpc://mc1.fleet-b.internal:50052", 8)
    refused(lambda: register_mc(mc_stub, auth))
    (audit,) = AuditLog.objects.filter(target_id=MC, event_type="controller_transferred")
    assert (audit.actor_type, audit.metadata) == ("system", {"from_client_id": old, "to_client_id": new})


def test_transfer_members_command_moves_every_member_of_a_credential(mh_stub, healthy_mh, auth, other_auth,
                                                                     other_credential, service_credential):
    call_command("transfer_members", "--handlers", "--to", other_credential.credential.client_id,
                 "--from", service_credential.credential.client_id, stdout=StringIO())

    assert MediaHandler.objects.get(pk=MH).owner_client_id == other_credential.credential.client_id
    assert mh_stub.SendLoadReport(load_report(streams=5), metadata=other_auth, timeout=10).acknowledged
    assert refused(lambda: register_mh(mh_stub, auth)).code() == grpc.StatusCode.PERMISSION_DENIED


def test_transfer_members_command_refuses_a_revoked_target_and_unknown_members(healthy_mc, other_credential,
                                                                              service_credential):
    with pytest.raises(CommandError, match="unknown meeting controller: mc-nobody"):
        call_command("transfer_members", "--to", other_credential.credential.client_id, MC, "mc-nobody",
                     stdout=StringIO())
    service_credential_revoke(client_id=other_credential.credential.client_id)
    with pytest.raises(CommandError, match="active service credential"):
        call_command("transfer_members", "--to", other_credential.credential.client_id, MC, stdout=StringIO())
    assert MeetingController.objects.get(pk=MC).owner_client_id == service_credential.credential.client_id
    assert not AuditLog.objects.filter(event_type="controller_transferred").exists()


def test_an_operator_transfers_controllers_in_the_admin(mc_stub, healthy_mc, auth, other_auth, other_credential,
                                                        operator_user, viewer_user):  # noqa: F811 (fixtures)
    new = other_credential.credential.client_id
    url = reverse("admin:controllers_meetingcontroller_changelist")
    form = {"action": "transfer_owner_action", "_selected_action": [MC]}
    client = Client()
    client.force_login(viewer_user)
    client.post(url, {**form, "post": "yes", "to_client_id": new})
    assert MeetingController.objects.get(pk=MC).owner_client_id != new  # the viewer group may not

    client.force_login(operator_user)
    confirm = client.post(url, form)
    assert confirm.status_code == 200 and b'name="to_client_id"' in confirm.content
    assert MeetingController.objects.get(pk=MC).owner_client_id != new  # nothing before confirmation
    done = client.post(url, {**form, "post": "yes", "to_client_id": new})

    assert done.status_code == 302
    assert MeetingController.objects.get(pk=MC).owner_client_id == new
    audit = AuditLog.objects.get(target_id=MC, event_type="controller_transferred")
    assert (audit.actor_type, audit.actor_user_id) == ("user", operator_user.pk)
    assert beat_refused_after_flush(mc_stub, auth).code() == grpc.StatusCode.PERMISSION_DENIED
    assert mc_stub.FastHeartbeat(fast(current=8), metadata=other_auth, timeout=10).acknowledged


# --- rows older than ownership -------------------------------------------------------------------------------

def test_an_unowned_controller_is_claimed_by_its_first_registration_only(mc_stub, auth, other_auth,
                                                                         service_credential):
    make_controller(controller_id=MC, health=HealthStatus.HEALTHY, grpc_endpoint="grpc://legacy:50052")

    assert register_mc(mc_stub, auth).accepted
    assert refused(lambda: register_mc(mc_stub, other_auth, endpoint="evil.example")).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )

    assert row()[0] == "grpc://mc1.fleet-a.internal:50052"
    assert MeetingController.objects.get(pk=MC).owner_client_id == service_credential.credential.client_id
    (claim,) = AuditLog.objects.filter(target_id=MC, event_type="controller_claimed")
    assert claim.metadata == {"client_id": service_credential.credential.client_id, "via": "register"}


def test_an_unowned_controller_is_claimed_by_its_first_beat(mc_stub, auth, other_auth, service_credential):
    make_controller(controller_id=MC, health=HealthStatus.HEALTHY)

    assert mc_stub.FastHeartbeat(fast(current=4), metadata=auth, timeout=10).acknowledged
    assert refused(lambda: mc_stub.FastHeartbeat(fast(health=pb.DRAINING), metadata=other_auth,
                                                 timeout=10)).code() == grpc.StatusCode.PERMISSION_DENIED

    controller_heartbeats.flush()
    assert row()[2:5] == (HealthStatus.HEALTHY, 4, None)
    assert AuditLog.objects.filter(target_id=MC, event_type="controller_claimed").count() == 1


def test_two_credentials_racing_for_an_unowned_row_one_wins(grpc_server, service_credential, other_credential):
    make_controller(controller_id=MC)
    first, second = service_credential.credential.client_id, other_credential.credential.client_id
    claimed, release, owners = threading.Event(), threading.Event(), {}

    def claim_and_hold() -> None:
        with transaction.atomic():
            owners[first] = member_claim(kind=CONTROLLERS, member_id=MC, client_id=first, via="register")
            claimed.set()
            release.wait(30)
        connection.close()

    def claim() -> None:
        owners[second] = member_claim(kind=CONTROLLERS, member_id=MC, client_id=second, via="register")
        connection.close()

    holder = threading.Thread(target=claim_and_hold)
    holder.start()
    assert claimed.wait(30)
    racer = threading.Thread(target=claim)
    racer.start()
    wait_for(lambda: waiting_for_a_row_lock() == 1, timeout=30, what="the second claim waiting for the row")
    release.set()
    holder.join(30)
    racer.join(30)

    assert owners == {first: first, second: first}
    assert MeetingController.objects.get(pk=MC).owner_client_id == first
    assert list(AuditLog.objects.filter(target_id=MC, event_type="controller_claimed")
                .values_list("metadata__client_id", flat=True)) == [first]


def waiting_for_a_row_lock() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                       "AND query LIKE 'UPDATE meeting_controllers SET owner_client_id%%'")
        return cursor.fetchone()[0]


def test_a_revoked_credentials_members_are_not_taken_over(mc_stub, healthy_mc, other_auth, service_credential):
    service_credential_revoke(client_id=service_credential.credential.client_id)

    assert refused(lambda: register_mc(mc_stub, other_auth, endpoint="evil.example")).code() == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    assert MeetingController.objects.get(pk=MC).owner_client_id == service_credential.credential.client_id
