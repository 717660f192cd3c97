"""A user's personal data as one JSON document: the service, streamed from server-side cursors, and the operators'
command."""

from __future__ import annotations

import io
import json
import uuid

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from accounts.services.personal_data import user_export
from audit.models import AuditLog
from darktower.errors import NotFound
from meetings.models import MeetingParticipant
from tests.factories import make_meeting, make_user
from tests.fixtures.personal_data import ACCESS_TOKEN, ADDRESS, USER_AGENT, make_subject

pytestmark = pytest.mark.django_db

SECTIONS = [
    "profile", "oauth_providers", "api_keys", "meetings_hosted", "participations", "recordings", "audit_events",
]


def _document(user_id: uuid.UUID) -> dict:
    return json.loads("".join(user_export(user_id=user_id, actor_user_id=user_id, via="api")))


def test_the_document_holds_every_section_of_the_user_and_no_secret():
    subject = make_subject()
    other = make_user(display_name="Someone Else")
    make_meeting(host=other)

    text = "".join(user_export(user_id=subject.user.pk, actor_user_id=subject.user.pk, via="api"))
    document = json.loads(text)

    assert [key for key in document if key in SECTIONS] == SECTIONS
    assert document["profile"]["email"] == subject.email
    assert document["profile"]["display_name"] == "Alice Liddell"
    assert "password" not in json.dumps(document["profile"])
    assert [(row["provider"], row["provider_user_id"]) for row in document["oauth_providers"]] == [
        ("wonderland-idp", "sub-alice-1")
    ]
    assert [row["name"] for row in document["api_keys"]] == ["alice laptop"]
    assert {row["meeting_code"] for row in document["meetings_hosted"]} == {subject.hosted.meeting_code}
    assert sorted(
        (row["meeting_code"], row["display_name"], row["ip_address"]) for row in document["participations"]
    ) == sorted([
        (subject.hosted.meeting_code, "Alice Liddell", ADDRESS),
        (subject.visited.meeting_code, subject.participant_name, ADDRESS),
    ])
    assert [row["recording_id"] for row in document["recordings"]] == [str(subject.recording.pk)]
    events = {row["event_type"] for row in document["audit_events"]}
    assert {"user_login", "meeting_created", "participant_joined", "api_key_created"} <= events
    login = next(row for row in document["audit_events"] if row["event_type"] == "user_login")
    assert (login["ip_address"], login["user_agent"]) == (ADDRESS, USER_AGENT)
    # Only the user's: nothing of the other user, and no token, key hash or share-link hash.
    assert "Someone Else" not in text
    assert ACCESS_TOKEN.decode() not in text and "provider-refresh-token" not in text
    for secret_column in ("key_hash", "access_token", "refresh_token", "share_token_hash", "password"):
        assert secret_column not in text


def test_an_export_is_audited_without_personal_data():
    user = make_user(email="quiet@example.test")

    _document(user.pk)

    row = AuditLog.objects.filter(event_type="user_data_exported").get()
    assert (row.actor_user_id, row.target_type, row.target_id) == (user.pk, "user", str(user.pk))
    assert row.metadata == {"via": "api"}


def test_an_unknown_user_is_not_found():
    with pytest.raises(NotFound):
        user_export(user_id=uuid.uuid4(), actor_user_id=None, via="command")


def test_a_heavy_users_export_is_valid_json_read_through_a_server_side_cursor_in_many_chunks():
    user = make_user(display_name="Heavy")
    meeting = make_meeting(host=make_user())
    rows = 3000
    MeetingParticipant.objects.bulk_create(
        MeetingParticipant(meeting=meeting, participant_id=uuid.uuid4(), user=user, display_name=f"Heavy {n}")
        for n in range(rows)
    )
    chunks = user_export(user_id=user.pk, actor_user_id=None, via="command")

    first = next(chunks)
    # The document is not built in memory: after its first chunk, the rows are still behind an open cursor of
    # this session on the server.
    received = [first]
    open_cursors: set[str] = set()
    for chunk in chunks:
        received.append(chunk)
        with connection.cursor() as cursor:
            cursor.execute("SELECT name FROM pg_cursors WHERE NOT is_holdable")
            open_cursors |= {name for (name,) in cursor.fetchall()}
    document = json.loads("".join(received))

    assert len(document["participations"]) == rows
    assert len(received) > 10
    assert max(len(chunk) for chunk in received) < 200_000
    assert open_cursors, "no server-side cursor was open while the rows streamed"


def test_the_command_writes_the_document_to_stdout():
    subject = make_subject()
    out = io.StringIO()

    call_command("user_export", subject.email.upper(), stdout=out)

    document = json.loads(out.getvalue())
    assert document["profile"]["user_id"] == str(subject.user.pk)
    assert AuditLog.objects.filter(event_type="user_data_exported", metadata__via="command").count() == 1


def test_the_command_refuses_an_unknown_email():
    with pytest.raises(CommandError, match="No user"):
        call_command("user_export", "nobody@example.test", stdout=io.StringIO())
