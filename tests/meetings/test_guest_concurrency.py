"""The guest seats, bans and admissions hold under concurrent requests: each thread on its own database
connection with real commits, released together by a barrier (tests.meetings.test_assignment_concurrency)."""

from __future__ import annotations

import threading
import uuid
from collections import Counter

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from meetings.models import MeetingParticipant, ParticipantStatus
from tests.factories import make_controller, make_meeting, make_user, user_token
from tests.locks import wait_until_blocking
from tests.meetings.test_assignment_concurrency import THREADS, run_concurrently

pytestmark = pytest.mark.django_db(transaction=True)

REGION = "us-east-1"


@pytest.fixture(autouse=True)
def fleet(settings):
    settings.RATE_LIMIT_JOIN_PER_IP = 100_000
    settings.RATE_LIMIT_JOIN_PER_PRINCIPAL = 100_000
    return [make_controller(region=REGION, controller_id=f"mc-{index}") for index in range(3)]


def guest_join(meeting, index, address=None):
    response = APIClient().post(
        f"/api/v1/meetings/{meeting.pk}/guest-token", {"display_name": f"G{index}"}, format="json",
        REMOTE_ADDR=address or f"192.0.2.{index + 1}",
    )
    return response.status_code


def test_concurrent_guests_never_take_more_than_the_guest_seats():
    meeting = make_meeting(host=make_user(), allow_guests=True, max_participants=50, max_guests=3)
    results, errors = run_concurrently(lambda index: guest_join(meeting, index))
    assert not errors, errors
    assert Counter(results.values()) == {201: 3, 409: THREADS - 3}
    assert MeetingParticipant.objects.filter(meeting=meeting, role="guest").count() == 3


def test_concurrent_joins_from_a_banned_address_are_all_refused():
    host = make_user()
    meeting = make_meeting(host=host, allow_guests=True, max_participants=50, max_guests=3)
    banned = "198.51.100.7"
    meeting.bans.create(principal=f"guest:{banned}", participant_id=uuid.uuid4(), display_name="Heckler")
    # Half the threads come from the banned address, half from their own.
    results, errors = run_concurrently(
        lambda index: (index % 2, guest_join(meeting, index, banned if index % 2 else None))
    )
    assert not errors, errors
    assert Counter(status for odd, status in results.values() if odd) == {403: THREADS // 2}
    assert Counter(status for odd, status in results.values() if not odd) == {201: 3, 409: THREADS // 2 - 3}
    assert not MeetingParticipant.objects.filter(meeting=meeting, ip_address=banned).exists()


def test_concurrent_admissions_never_exceed_the_guest_seats():
    host = make_user()
    meeting = make_meeting(host=host, allow_guests=True, waiting_room_enabled=True, max_guests=3)
    waiting = [
        MeetingParticipant.objects.create(
            meeting=meeting, participant_id=uuid.uuid4(), display_name=f"G{index}", role="guest",
            status=ParticipantStatus.WAITING,
        )
        for index in range(THREADS)
    ]
    token = user_token(host)

    def admit(index):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
        url = f"/api/v1/meetings/{meeting.pk}/participants/{waiting[index].participant_id}/admit"
        return client.post(url, format="json").status_code

    results, errors = run_concurrently(admit)
    assert not errors, errors
    assert Counter(results.values()) == {200: 3, 409: THREADS - 3}
    assert MeetingParticipant.objects.filter(meeting=meeting, status=ParticipantStatus.ADMITTED).count() == 3


def test_a_join_that_waited_for_a_kick_reads_its_ban():
    """The join reads bans in a statement after it holds the meeting row: a join that queued behind the kick's
    lock sees the ban the kick committed, not the snapshot it started with."""
    host, kicked = make_user(), make_user()
    meeting = make_meeting(host=host)
    participant = MeetingParticipant.objects.create(
        meeting=meeting, participant_id=uuid.uuid4(), user=kicked, display_name="Kicked"
    )
    token, outcome = user_token(kicked), {}

    def rejoin():
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
            outcome["status"] = client.post(f"/api/v1/meetings/{meeting.pk}/join", {}, format="json").status_code
        finally:
            connection.close()

    thread = threading.Thread(target=rejoin)
    with transaction.atomic(), connection.cursor() as cursor:
        # What the kick does, held open: the meeting row locked, the participant closed, the principal banned.
        cursor.execute("SELECT 1 FROM meetings WHERE meeting_id = %s FOR NO KEY UPDATE", [meeting.pk])
        MeetingParticipant.objects.filter(pk=participant.pk).update(left_at=participant.joined_at)
        meeting.bans.create(principal=f"user:{kicked.pk}", participant_id=participant.participant_id,
                            display_name="Kicked")
        thread.start()
        # The join's statement waits for the meeting row this transaction holds (pg_locks).
        assert wait_until_blocking(), "the join never waited for the meeting row"
    thread.join(timeout=30)
    assert outcome == {"status": 403}
