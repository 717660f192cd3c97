"""NotifyMeetingEnded's service: end the region's assignment, then the meeting once no region runs it."""

from __future__ import annotations

import uuid

import pytest

from audit.models import AuditLog, OutboxEvent
from controllers.models import MeetingController
from darktower.errors import NotFound, PermissionDenied
from meetings.models import Meeting, MeetingAssignment, MeetingParticipant
from meetings.services.meetings import meeting_end
from tests.factories import make_controller, make_meeting, make_user

pytestmark = pytest.mark.django_db


def assign(meeting, controller):
    return MeetingAssignment.objects.create(
        meeting=meeting, meeting_controller=controller, region=controller.region, assigned_by_gc_id="gc-test"
    )


def test_ending_the_last_region_ends_the_meeting_and_closes_participants():
    controller = make_controller(controller_id="mc-1", current_meetings=2, owner_client_id="svc")
    meeting = make_meeting(host=make_user(), status="active")
    assign(meeting, controller)
    MeetingParticipant.objects.create(meeting=meeting, participant_id=uuid.uuid4(), display_name="Guest")

    result = meeting_end(meeting_id=meeting.meeting_id, region="us-east-1", actor_client_id="svc")

    assert result.assignment_ended and result.meeting_ended
    assert MeetingAssignment.objects.get(meeting=meeting).end_reason == "meeting_ended"
    meeting.refresh_from_db()
    assert (meeting.status, meeting.ended_at is not None) == ("ended", True)
    assert MeetingParticipant.objects.get(meeting=meeting).leave_reason == "meeting_ended"
    assert MeetingController.objects.get(pk="mc-1").current_meetings == 1
    assert OutboxEvent.objects.filter(aggregate_id=str(meeting.meeting_id), event_type="meeting_ended").count() == 1
    assert sorted(AuditLog.objects.filter(target_id=str(meeting.meeting_id)).values_list("event_type", "actor_type")) \
        == [("meeting_assignment_ended", "service"), ("meeting_ended", "service")]


def test_a_repeated_notification_changes_nothing():
    controller = make_controller(controller_id="mc-1", current_meetings=1)
    meeting = make_meeting(host=make_user(), status="active")
    assign(meeting, controller)
    meeting_end(meeting_id=meeting.meeting_id, region="us-east-1")
    audit_count, ended_at = AuditLog.objects.count(), Meeting.objects.get(pk=meeting.pk).ended_at

    again = meeting_end(meeting_id=meeting.meeting_id, region="us-east-1")

    assert not again.assignment_ended and not again.meeting_ended
    assert AuditLog.objects.count() == audit_count
    assert Meeting.objects.get(pk=meeting.pk).ended_at == ended_at
    assert MeetingController.objects.get(pk="mc-1").current_meetings == 0


def test_another_region_still_running_keeps_the_meeting_active():
    meeting = make_meeting(host=make_user(), status="active")
    assign(meeting, make_controller(controller_id="mc-us", region="us-east-1"))
    assign(meeting, make_controller(controller_id="mc-eu", region="eu-west-1"))

    first = meeting_end(meeting_id=meeting.meeting_id, region="us-east-1")
    assert first.assignment_ended and not first.meeting_ended
    assert Meeting.objects.get(pk=meeting.pk).status == "active"

    second = meeting_end(meeting_id=meeting.meeting_id, region="eu-west-1")
    assert second.meeting_ended
    assert Meeting.objects.get(pk=meeting.pk).status == "ended"


def test_a_meeting_that_never_ran_is_not_ended_by_a_stray_notification():
    meeting = make_meeting(host=make_user())

    result = meeting_end(meeting_id=meeting.meeting_id, region="us-east-1")

    assert not result.assignment_ended and not result.meeting_ended
    assert Meeting.objects.get(pk=meeting.pk).status == "scheduled"


def test_an_unknown_meeting_is_not_found():
    with pytest.raises(NotFound):
        meeting_end(meeting_id=uuid.uuid4(), region="us-east-1")


# --- only what the caller's own controllers host ------------------------------------------------------------

def test_a_caller_ends_only_its_own_assignment_and_the_meeting_once_none_is_left():
    meeting = make_meeting(host=make_user(), status="active")
    assign(meeting, make_controller(controller_id="mc-us", region="us-east-1", owner_client_id="svc-us"))
    assign(meeting, make_controller(controller_id="mc-eu", region="eu-west-1", owner_client_id="svc-eu"))

    # The US fleet names the EU region: the assignment there is not its to end.
    with pytest.raises(PermissionDenied):
        meeting_end(meeting_id=meeting.meeting_id, region="eu-west-1", actor_client_id="svc-us")
    assert MeetingAssignment.objects.filter(meeting=meeting, ended_at__isnull=True).count() == 2

    own = meeting_end(meeting_id=meeting.meeting_id, region="us-east-1", actor_client_id="svc-us")
    assert own.assignment_ended and not own.meeting_ended
    assert Meeting.objects.get(pk=meeting.pk).status == "active"
    # A repeat by the same fleet is harmless, not refused.
    again = meeting_end(meeting_id=meeting.meeting_id, region="us-east-1", actor_client_id="svc-us")
    assert not again.assignment_ended and not again.meeting_ended

    last = meeting_end(meeting_id=meeting.meeting_id, region="eu-west-1", actor_client_id="svc-eu")
    assert last.assignment_ended and last.meeting_ended
    assert Meeting.objects.get(pk=meeting.pk).status == "ended"


@pytest.mark.parametrize("owner", [None, "svc-other"], ids=["unowned-mc", "another-fleet"])
def test_a_meeting_hosted_elsewhere_is_refused_and_audited(owner):
    meeting = make_meeting(host=make_user(), status="active")
    assign(meeting, make_controller(controller_id="mc-1", current_meetings=1, owner_client_id=owner))

    with pytest.raises(PermissionDenied):
        meeting_end(meeting_id=meeting.meeting_id, region="us-east-1", actor_client_id="svc-stranger")

    assert MeetingAssignment.objects.get(meeting=meeting).ended_at is None
    assert Meeting.objects.get(pk=meeting.pk).status == "active"
    assert MeetingController.objects.get(pk="mc-1").current_meetings == 1
    (audit,) = AuditLog.objects.filter(target_id=str(meeting.meeting_id))
    assert (audit.result, audit.actor_type, audit.action, audit.metadata["client_id"]) == (
        "failure", "service", "end_assignment", "svc-stranger",
    )


def test_a_meeting_that_never_ran_is_refused_to_a_caller():
    meeting = make_meeting(host=make_user())

    with pytest.raises(PermissionDenied):
        meeting_end(meeting_id=meeting.meeting_id, region="us-east-1", actor_client_id="svc-stranger")
    assert Meeting.objects.get(pk=meeting.pk).status == "scheduled"
