"""meetings.services.admission called directly, on the real database."""

from __future__ import annotations

import uuid

import pytest
from django.db import transaction

from audit.models import AuditLog, OutboxEvent
from darktower.errors import NotFound, PermissionDenied
from meetings.models import MeetingBan, MeetingParticipant, ParticipantStatus
from meetings.services.admission import (
    meeting_ban_in_transaction,
    meeting_ban_lift,
    participant_admit,
    participant_deny,
    participant_principal,
)
from tests.factories import make_meeting

pytestmark = pytest.mark.django_db


def waiting_guest(meeting, address="192.0.2.5"):
    return MeetingParticipant.objects.create(
        meeting=meeting, participant_id=uuid.uuid4(), display_name="G", role="guest",
        status=ParticipantStatus.WAITING, ip_address=address,
    )


def test_principals():
    user_id = uuid.uuid4()
    assert participant_principal(user_id=user_id, ip_address="192.0.2.1") == f"user:{user_id}"
    assert participant_principal(user_id=None, ip_address="2001:db8::1") == "guest:2001:db8::1"
    assert participant_principal(user_id=None, ip_address=None) == "guest:unknown"


def test_a_non_host_admits_denies_and_lifts_nothing(host, other):
    meeting = make_meeting(host=host, allow_guests=True, waiting_room_enabled=True)
    guest = waiting_guest(meeting)
    for call in (
        lambda: participant_admit(meeting_id=meeting.pk, participant_id=guest.participant_id, actor_user_id=other.pk),
        lambda: participant_deny(meeting_id=meeting.pk, participant_id=guest.participant_id, actor_user_id=other.pk,
                                 ban=True),
        lambda: meeting_ban_lift(meeting_id=meeting.pk, ban_id=uuid.uuid4(), actor_user_id=other.pk),
    ):
        with pytest.raises(PermissionDenied):
            call()
    guest.refresh_from_db()
    assert (guest.status, guest.left_at) == (ParticipantStatus.WAITING, None)
    assert not MeetingBan.objects.exists() and not OutboxEvent.objects.exists()
    assert not AuditLog.objects.filter(target_id=str(meeting.pk)).exists()
    with pytest.raises(NotFound):
        participant_admit(meeting_id=uuid.uuid4(), participant_id=guest.participant_id, actor_user_id=host.pk)


def test_banning_twice_keeps_one_ban_and_one_audit_row(host):
    meeting = make_meeting(host=host)
    guest = waiting_guest(meeting)
    with transaction.atomic():
        assert meeting_ban_in_transaction(meeting_id=meeting.pk, participant=guest, actor_user_id=host.pk) is True
        assert meeting_ban_in_transaction(meeting_id=meeting.pk, participant=guest, actor_user_id=host.pk) is False
    ban = MeetingBan.objects.get()
    assert (ban.principal, ban.kind, ban.user_id, ban.banned_by_user_id) == ("guest:192.0.2.5", "guest", None, host.pk)
    assert AuditLog.objects.filter(event_type="participant_banned").count() == 1
    assert "192.0.2.5" not in str(AuditLog.objects.get(event_type="participant_banned").metadata)


def test_deny_with_a_ban_writes_both_and_the_events(host):
    meeting = make_meeting(host=host, allow_guests=True, waiting_room_enabled=True)
    guest = waiting_guest(meeting)
    denied = participant_deny(meeting_id=meeting.pk, participant_id=guest.participant_id, actor_user_id=host.pk,
                              ban=True)
    assert denied.leave_reason == "denied" and denied.left_at is not None and denied.total_duration_seconds == 0
    assert MeetingBan.objects.get().participant_id == guest.participant_id
    event = OutboxEvent.objects.get(event_type="participant_denied")
    assert event.payload == {"meeting_id": str(meeting.pk), "participant_id": str(guest.participant_id)}
    assert list(AuditLog.objects.filter(target_id=str(meeting.pk)).order_by("id").values_list(
        "event_type", flat=True)) == ["participant_denied", "participant_banned"]
