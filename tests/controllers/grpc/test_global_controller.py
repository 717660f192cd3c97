"""GlobalControllerService end to end: a real server on loopback, real tokens, the real database."""

from __future__ import annotations

import time

import grpc
import pytest
from django.db import connection

from audit.models import AuditLog
from controllers.heartbeats import controller_heartbeats
from controllers.models import HealthStatus, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from meetings.models import Meeting, MeetingAssignment
from tests.factories import make_controller, make_meeting, make_user


def register_request(controller_id="mc-e2e-1", **overrides):
    fields = {
        "id": controller_id, "region": "us-east-1", "grpc_endpoint": "grpc://mc1.internal:50052",
        "webtransport_endpoint": "https://mc1.internal:4433", "max_meetings": 100, "max_participants": 1000,
    }
    fields.update(overrides)
    return pb.RegisterMCRequest(**fields)


def test_register_mc_creates_a_pending_controller(mc_stub, auth, service_credential):
    response = mc_stub.RegisterMC(register_request(), metadata=auth)

    assert response.accepted and response.message == "registered"
    assert (response.fast_heartbeat_interval_ms, response.comprehensive_heartbeat_interval_ms) == (10000, 30000)
    controller = MeetingController.objects.get(pk="mc-e2e-1")
    assert controller.health_status == HealthStatus.PENDING
    audit = AuditLog.objects.get(target_id="mc-e2e-1")
    assert (audit.event_type, audit.actor_type, audit.metadata["client_id"]) == (
        "controller_registered", "service", service_credential.credential.client_id,
    )


def test_register_mc_twice_upserts(mc_stub, auth):
    mc_stub.RegisterMC(register_request(), metadata=auth)
    response = mc_stub.RegisterMC(register_request(max_meetings=7, webtransport_endpoint=""), metadata=auth)

    assert response.message == "re-registered"
    controller = MeetingController.objects.get(pk="mc-e2e-1")
    assert (controller.max_meetings, controller.webtransport_endpoint) == (7, None)


def test_heartbeats_make_a_new_controller_healthy_at_once_and_coalesce_the_rest(mc_stub, auth):
    mc_stub.RegisterMC(register_request(), metadata=auth)
    capacity = pb.ControllerCapacity(max_meetings=100, current_meetings=3, max_participants=1000,
                                     current_participants=30)

    before = int(time.time())
    first = mc_stub.FastHeartbeat(
        pb.FastHeartbeatRequest(controller_id="mc-e2e-1", capacity=capacity, health=pb.HEALTHY), metadata=auth
    )

    assert first.acknowledged and before <= first.timestamp <= int(time.time())
    # A state change is written before the answer, with its audit row.
    controller = MeetingController.objects.get(pk="mc-e2e-1")
    assert (controller.health_status, controller.current_meetings) == ("healthy", 3)
    assert AuditLog.objects.filter(target_id="mc-e2e-1", event_type="controller_healthy").count() == 1

    # A beat that changes nothing but counters is acknowledged and written by the next flush.
    capacity.current_meetings = 9
    second = mc_stub.ComprehensiveHeartbeat(
        pb.ComprehensiveHeartbeatRequest(controller_id="mc-e2e-1", capacity=capacity, health=pb.HEALTHY,
                                         cpu_usage_percent=55.5, memory_usage_percent=60.0),
        metadata=auth,
    )
    assert second.acknowledged
    deadline = time.monotonic() + 5
    while MeetingController.objects.get(pk="mc-e2e-1").current_meetings != 9 and time.monotonic() < deadline:
        time.sleep(0.05)
    controller = MeetingController.objects.get(pk="mc-e2e-1")
    assert (controller.current_meetings, controller.cpu_usage_percent, controller.memory_usage_percent) == (
        9, 55.5, 60.0,
    )
    assert AuditLog.objects.filter(target_id="mc-e2e-1").count() == 2  # registered, became healthy


def test_reported_degraded_and_draining_are_stored_before_the_answer(mc_stub, auth, service_credential):
    make_controller(controller_id="mc-e2e-1", health=HealthStatus.HEALTHY,
                    owner_client_id=service_credential.credential.client_id)

    mc_stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-e2e-1", health=pb.DEGRADED), metadata=auth)
    assert MeetingController.objects.get(pk="mc-e2e-1").health_status == "degraded"

    mc_stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-e2e-1", health=pb.DRAINING), metadata=auth)
    assert MeetingController.objects.get(pk="mc-e2e-1").health_status == "draining"

    mc_stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-e2e-1", health=pb.HEALTHY), metadata=auth)
    controller_heartbeats.flush()
    assert MeetingController.objects.get(pk="mc-e2e-1").health_status == "draining"
    assert list(
        AuditLog.objects.filter(target_id="mc-e2e-1").order_by("id").values_list("event_type", flat=True)
    ) == ["controller_degraded", "controller_draining"]


def test_a_controller_registered_by_another_process_beats_at_once(mc_stub, auth):
    controller_heartbeats.flush()  # the cache is loaded; this row is new to it
    make_controller(controller_id="mc-elsewhere", health=HealthStatus.PENDING)

    response = mc_stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-elsewhere"), metadata=auth)

    assert response.acknowledged
    assert MeetingController.objects.get(pk="mc-elsewhere").health_status == "healthy"


@pytest.mark.parametrize("rpc", ["FastHeartbeat", "ComprehensiveHeartbeat"])
def test_heartbeat_from_an_unknown_controller_is_not_found(mc_stub, auth, rpc):
    request = getattr(pb, f"{rpc}Request")(controller_id="mc-never-registered")

    with pytest.raises(grpc.RpcError) as error:
        getattr(mc_stub, rpc)(request, metadata=auth)

    assert error.value.code() == grpc.StatusCode.NOT_FOUND
    assert "register" in error.value.details()


def test_heartbeat_after_the_controller_was_deleted_is_not_found(mc_stub, auth):
    make_controller(controller_id="mc-e2e-1", health=HealthStatus.HEALTHY)
    mc_stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-e2e-1", health=pb.HEALTHY), metadata=auth)
    MeetingController.objects.filter(pk="mc-e2e-1").delete()
    controller_heartbeats.flush()

    with pytest.raises(grpc.RpcError) as error:
        mc_stub.FastHeartbeat(pb.FastHeartbeatRequest(controller_id="mc-e2e-1", health=pb.HEALTHY), metadata=auth)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_notify_meeting_ended_ends_the_assignment_and_the_meeting_idempotently(mc_stub, auth, service_credential):
    controller = make_controller(controller_id="mc-e2e-1", current_meetings=1,
                                 owner_client_id=service_credential.credential.client_id)
    meeting = make_meeting(host=make_user(), status="active")
    MeetingAssignment.objects.create(
        meeting=meeting, meeting_controller=controller, region="us-east-1", assigned_by_gc_id="gc-test"
    )
    request = pb.NotifyMeetingEndedRequest(meeting_id=str(meeting.meeting_id), region="us-east-1")

    assert mc_stub.NotifyMeetingEnded(request, metadata=auth).acknowledged
    assert mc_stub.NotifyMeetingEnded(request, metadata=auth).acknowledged

    assignment = MeetingAssignment.objects.get(meeting=meeting)
    assert assignment.ended_at is not None and assignment.end_reason == "meeting_ended"
    meeting.refresh_from_db()
    assert meeting.status == "ended" and meeting.ended_at is not None
    assert MeetingController.objects.get(pk="mc-e2e-1").current_meetings == 0
    assert AuditLog.objects.filter(target_id=str(meeting.meeting_id), event_type="meeting_ended").count() == 1


def test_notify_meeting_ended_for_an_unknown_meeting_is_not_found(mc_stub, auth):
    request = pb.NotifyMeetingEndedRequest(meeting_id="7b0cf7e4-3f7e-4d0c-9d44-6c1c0f6a2b11", region="us-east-1")

    with pytest.raises(grpc.RpcError) as error:
        mc_stub.NotifyMeetingEnded(request, metadata=auth)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND


def test_database_outage_answers_unavailable_without_sql(mc_stub, auth, grpc_server):
    # Point the workers at a database that does not exist: connecting fails like an outage would.
    from django.db import connections

    db_settings = connections.settings["default"]
    saved = db_settings["NAME"]
    db_settings["NAME"] = "dt_grpc_no_such_database"
    try:
        with pytest.raises(grpc.RpcError) as error:
            mc_stub.RegisterMC(register_request(), metadata=auth)
    finally:
        db_settings["NAME"] = saved
    assert error.value.code() == grpc.StatusCode.UNAVAILABLE
    assert error.value.details() == "database unavailable; retry later"
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


def test_meeting_status_of_other_regions_keeps_it_running(mc_stub, auth, service_credential):
    first = make_controller(controller_id="mc-us", region="us-east-1",
                            owner_client_id=service_credential.credential.client_id)
    second = make_controller(controller_id="mc-eu", region="eu-west-1")
    meeting = make_meeting(host=make_user(), status="active")
    for controller in (first, second):
        MeetingAssignment.objects.create(
            meeting=meeting, meeting_controller=controller, region=controller.region, assigned_by_gc_id="gc-test"
        )

    mc_stub.NotifyMeetingEnded(
        pb.NotifyMeetingEndedRequest(meeting_id=str(meeting.meeting_id), region="us-east-1"), metadata=auth
    )

    assert Meeting.objects.get(pk=meeting.pk).status == "active"
    assert MeetingAssignment.objects.filter(meeting=meeting, ended_at__isnull=True).get().region == "eu-west-1"
