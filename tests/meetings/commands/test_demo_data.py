"""The demo data set: realistic, idempotent, and `--reset` / `--if-empty` do what they say."""

from __future__ import annotations

from io import StringIO

import pytest
from django.conf import settings
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command

from accounts.models import User
from audit.models import AuditLog
from audit.services import database_now
from controllers.models import MediaHandler, MeetingController
from meetings.demo_data import DEMO_AUDIT_SOURCE, DEMO_PASSWORD, DEMO_USERS, demo_data_load
from meetings.models import Meeting, MeetingAssignment, MeetingParticipant, Recording
from tests.factories import make_controller, make_meeting, make_user

pytestmark = pytest.mark.django_db

MODELS = (User, Meeting, MeetingParticipant, Recording, MeetingController, MediaHandler, MeetingAssignment, AuditLog)


def _counts() -> dict[str, int]:
    return {model.__name__: model.objects.count() for model in MODELS}


def _seed(*args: str) -> str:
    out = StringIO()
    call_command("seed_demo", *args, stdout=out)
    return out.getvalue()


@pytest.fixture(autouse=True)
def debug(settings):
    settings.DEBUG = True


def test_the_demo_set_is_realistic():
    summary = demo_data_load()

    assert summary.users == 4
    assert summary.meetings == {"scheduled": 2, "active": 2, "ended": 2}
    assert set(summary.meeting_controllers) == {"pending", "healthy", "degraded", "unhealthy", "draining"}
    assert sum(summary.meeting_controllers.values()) >= 8
    assert sum(summary.media_handlers.values()) >= 4
    assert set(MeetingController.objects.values_list("region", flat=True)) == {"us-east-1", "eu-west-1", "ap-south-1"}
    assert set(MediaHandler.objects.values_list("region", flat=True)) == {"us-east-1", "eu-west-1", "ap-south-1"}
    assert Recording.objects.get().status == "ready"
    assert set(MeetingParticipant.objects.exclude(leave_reason=None).values_list("leave_reason", flat=True)) == {
        "voluntary", "kicked", "connection_lost", "meeting_ended",
    }
    assert MeetingParticipant.objects.filter(user=None).exists()  # guests
    assert summary.created == _counts_without_audit() and summary.deleted == 0
    assert summary.audit_entries == AuditLog.objects.filter(metadata__source=DEMO_AUDIT_SOURCE).count() > 0


def _counts_without_audit() -> int:
    return sum(count for name, count in _counts().items() if name != "AuditLog")


def test_each_active_meeting_is_assigned_to_a_controller_in_its_region_and_only_active_ones_are():
    demo_data_load()

    active = MeetingAssignment.objects.filter(ended_at=None).select_related("meeting", "meeting_controller")
    assert sorted(a.meeting.meeting_code for a in active) == sorted(
        Meeting.objects.filter(status="active").values_list("meeting_code", flat=True)
    )
    for assignment in active:
        assert assignment.meeting_controller.region == assignment.region == assignment.meeting.assigned_region
        assert assignment.meeting.assigned_controller_id == assignment.meeting_controller_id
        assert assignment.meeting_controller.health_status in ("healthy", "degraded")
    assert not Meeting.objects.filter(status="ended", participants__left_at=None).exists()


def test_heartbeat_ages_match_the_health_states():
    demo_data_load()
    now = database_now()

    for controller in MeetingController.objects.all():
        age = (now - controller.last_heartbeat_at).total_seconds()
        stale = age > settings.HEARTBEAT_STALE_THRESHOLD_SECONDS
        assert stale == (controller.health_status == "unhealthy"), controller.controller_id
        assert controller.current_meetings <= controller.max_meetings
        assert controller.current_participants <= controller.max_participants


def test_demo_users_sign_in_with_the_documented_password():
    demo_data_load()

    for email in DEMO_USERS:
        assert authenticate(username=email, password=DEMO_PASSWORD) is not None
        assert not User.objects.get(email=email).is_staff


def test_loading_twice_changes_nothing():
    demo_data_load()
    first = _counts()

    again = demo_data_load()

    assert _counts() == first
    assert (again.created, again.audit_entries, again.deleted) == (0, 0, 0)


def test_loading_again_restores_edited_demo_rows():
    demo_data_load()
    Meeting.objects.filter(meeting_code="demo-standup").update(display_name="Renamed")
    MeetingController.objects.filter(controller_id="mc-us-east-1-demo-01").update(health_status="unhealthy")

    demo_data_load()

    assert Meeting.objects.get(meeting_code="demo-standup").display_name == "Daily standup"
    assert MeetingController.objects.get(controller_id="mc-us-east-1-demo-01").health_status == "healthy"


def test_reset_reloads_the_demo_rows_and_leaves_other_rows_alone():
    demo_data_load()
    first = _counts()
    standup = Meeting.objects.get(meeting_code="demo-standup")
    MeetingParticipant.objects.filter(meeting=standup).delete()
    other_user, other_meeting, other_controller = make_user(), make_meeting(), make_controller()

    output = _seed("--reset")

    # The first load's audit rows stay (the trail is append-only); the reload writes its own.
    assert _counts() == {
        **first, "User": first["User"] + 1, "Meeting": first["Meeting"] + 1,
        "MeetingController": first["MeetingController"] + 1, "AuditLog": 2 * first["AuditLog"],
    }
    assert Meeting.objects.get(meeting_code="demo-standup").pk != standup.pk  # deleted, then created again
    assert MeetingParticipant.objects.filter(meeting__meeting_code="demo-standup").count() == 4
    for row in (other_user, other_meeting, other_controller):
        assert type(row).objects.filter(pk=row.pk).exists()
    assert output.startswith("Demo data reset (")


def test_if_empty_loads_into_an_empty_database_only():
    make_controller()
    skipped = _seed("--if-empty")
    assert skipped == "Demo data not loaded: the database already has meetings or controllers.\n"
    assert not User.objects.filter(email__in=DEMO_USERS).exists()

    MeetingController.objects.all().delete()
    loaded = _seed("--if-empty")

    assert loaded.startswith("Demo data loaded: ")
    assert Meeting.objects.count() == 6
    assert _seed("--if-empty") == skipped


def test_the_command_prints_a_summary_without_secrets():
    output = _seed()

    lines = output.splitlines()
    assert lines[0].startswith("Demo data loaded: ")
    assert "  meetings       6 (active 2, ended 2, scheduled 2)" in lines
    assert "  controllers    9 (degraded 2, draining 1, healthy 4, pending 1, unhealthy 1)" in lines
    assert f"sign in with the password '{DEMO_PASSWORD}'" in lines[-1]
    for user in User.objects.all():
        assert user.password not in output


def test_the_command_refuses_to_run_without_debug(settings):
    settings.DEBUG = False

    with pytest.raises(CommandError, match="only runs with DEBUG on"):
        _seed()
    assert not User.objects.exists()
