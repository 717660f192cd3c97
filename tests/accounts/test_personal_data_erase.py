"""Erasing a user: one service, one transaction, nothing left that names them but audit rows with a NULL actor."""

from __future__ import annotations

import io
import uuid

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection

from accounts.models import ApiKey, OAuthProvider, User
from accounts.services.personal_data import user_erase
from audit.models import AuditLog, IdempotencyKey, OutboxEvent
from darktower import registry
from meetings.models import LeaveReason, Meeting, MeetingBan, MeetingParticipant, MeetingStatus, Recording
from tests.factories import make_user
from tests.fixtures.personal_data import make_subject, tables_naming

pytestmark = pytest.mark.django_db


def test_after_erasure_no_table_names_the_user():
    subject = make_subject()
    assert set(tables_naming(subject.needles)) == set(subject.needles)  # the search finds them before

    outcome = user_erase(user_id=subject.user.pk, actor_user_id=None, via="api")

    assert outcome.erased
    assert tables_naming(subject.needles) == {}


def test_erasure_removes_the_account_ends_hosted_meetings_and_anonymises_participations():
    bystander = make_user(display_name="Bystander Bob")
    subject = make_subject(bystander=bystander)
    user_id = subject.user.pk
    actor_rows = list(AuditLog.objects.filter(actor_user_id=user_id).values_list("id", flat=True))

    user_erase(user_id=user_id, actor_user_id=None, via="api")

    assert not User.objects.filter(pk=user_id).exists()
    assert not OAuthProvider.objects.filter(user_id=user_id).exists()
    assert not ApiKey.objects.filter(user_id=user_id).exists()
    # The hosted meeting ended through meeting_end: participants closed, the MCs told through the outbox.
    hosted = Meeting.objects.get(pk=subject.hosted.pk)
    assert (hosted.status, hosted.created_by_user_id) == (MeetingStatus.ENDED, None)
    assert OutboxEvent.objects.filter(aggregate_id=str(hosted.pk), event_type="meeting_ended").count() == 1
    assert set(
        MeetingParticipant.objects.filter(meeting=hosted).values_list("leave_reason", flat=True)
    ) == {LeaveReason.MEETING_ENDED}
    # The bystander's own participation and meeting are untouched.
    theirs = MeetingParticipant.objects.get(meeting=hosted, user=bystander)
    assert (theirs.display_name, theirs.ip_address) == ("Bystander Bob", "198.51.100.9")
    assert Meeting.objects.get(pk=subject.visited.pk).status != MeetingStatus.ENDED
    # The user's participations stay (the meeting's history) without anything that names them.
    mine = MeetingParticipant.objects.filter(meeting__in=[subject.hosted, subject.visited], user__isnull=True)
    assert mine.count() == 2
    assert {(row.display_name, row.ip_address, row.user_agent) for row in mine} == {("Deleted user", None, None)}
    assert not Recording.objects.filter(pk=subject.recording.pk).exists()
    assert not MeetingBan.objects.filter(principal=f"user:{user_id}").exists()
    assert not IdempotencyKey.objects.filter(principal=f"user:{user_id}").exists()
    # Audit rows stay, with a NULL actor.
    assert AuditLog.objects.filter(id__in=actor_rows).count() == len(actor_rows)
    assert not AuditLog.objects.filter(id__in=actor_rows, actor_user_id__isnull=False).exists()


def test_the_erasure_is_audited_without_personal_data():
    subject = make_subject()
    operator = make_user(is_staff=True)

    user_erase(user_id=subject.user.pk, actor_user_id=operator.pk, via="admin")

    row = AuditLog.objects.filter(event_type="user_erased").get()
    assert (row.actor_user_id, row.target_type, row.target_id) == (operator.pk, "user", str(subject.user.pk))
    assert row.ip_address is None and row.user_agent is None
    assert row.metadata["via"] == "admin"
    assert row.metadata["counts"]["recordings_deleted"] == 1
    assert row.metadata["counts"]["meetings_ended"] == 1
    assert row.metadata["counts"]["participations_anonymised"] == 2
    text = str(row.metadata)
    assert all(needle not in text for needle in subject.needles)


def test_a_second_erasure_is_a_clean_no_op():
    subject = make_subject()
    user_erase(user_id=subject.user.pk, actor_user_id=None, via="api")
    rows = AuditLog.objects.count()

    outcome = user_erase(user_id=subject.user.pk, actor_user_id=None, via="command")

    assert not outcome.erased
    assert AuditLog.objects.count() == rows


def test_a_failing_step_leaves_everything_as_it_was(monkeypatch):
    subject = make_subject()

    def failing(*, user_id: uuid.UUID) -> dict[str, int]:
        raise DatabaseError("the last step failed")

    monkeypatch.setitem(
        registry._personal_data_erasers, "zz_failing", registry.PersonalDataEraser("zz_failing", failing, 999)
    )
    with pytest.raises(DatabaseError):
        user_erase(user_id=subject.user.pk, actor_user_id=None, via="api")

    assert connection.in_atomic_block
    assert User.objects.filter(pk=subject.user.pk).exists()
    assert Meeting.objects.get(pk=subject.hosted.pk).status == MeetingStatus.ACTIVE
    assert Recording.objects.filter(pk=subject.recording.pk).exists()
    assert MeetingParticipant.objects.filter(user=subject.user, display_name=subject.participant_name).exists()


def test_the_command_erases_by_email_and_says_when_there_is_nothing_to_erase():
    subject = make_subject()
    out = io.StringIO()

    call_command("user_erase", subject.email, stdout=out)
    call_command("user_erase", subject.email, stdout=out)

    first, second = out.getvalue().strip().splitlines()
    assert "Erased user" in first and subject.email not in first
    assert "No user" in second and "nothing to erase" in second
    assert not User.objects.filter(pk=subject.user.pk).exists()
    assert AuditLog.objects.filter(event_type="user_erased", metadata__via="command").count() == 1


def test_the_audit_rows_a_deleted_user_acted_in_lose_their_address_agent_and_login_hash_only():
    from audit.services import audit_record

    user, bystander = make_user(), make_user()
    for actor in (user, bystander):
        audit_record(
            event_type="user_login", action="login", actor_type="user", actor_user_id=actor.pk,
            target_type="login_email", target_id=f"hash-{actor.pk}", ip_address="192.0.2.1", user_agent="Agent/1",
            metadata={"n": 1},
        )
    mine = AuditLog.objects.filter(actor_user_id=user.pk).values().get()

    user_erase(user_id=user.pk, actor_user_id=None, via="api")

    assert AuditLog.objects.filter(pk=mine["id"]).values().get() == {
        **mine, "actor_user_id": None, "ip_address": None, "user_agent": None, "target_id": None,
    }
    theirs = AuditLog.objects.filter(actor_user_id=bystander.pk).get()
    assert (theirs.ip_address, theirs.user_agent, theirs.target_id) == ("192.0.2.1", "Agent/1", f"hash-{bystander.pk}")
