"""Recording share links: only a hash of the token is stored, the token is shown once (at share or rotate),
links expire (RECORDING_SHARE_DEFAULT_SECONDS, at most RECORDING_SHARE_MAX_SECONDS), and the host can end a
link (unshare) or replace it (rotate), each audited without the token. An unknown, expired, unshared or
rotated-away token answers the same 404 at the public endpoint."""

from __future__ import annotations

import hashlib
import json
from datetime import timedelta

import pytest
from django.utils import timezone

from audit.models import AuditLog
from darktower.errors import PermissionDenied
from darktower.log_redaction import redact
from meetings.models import Recording
from meetings.selectors import recording_by_share_token
from meetings.services.recordings import recording_share, recording_share_rotate, recording_unshare
from tests.factories import make_meeting, make_recording
from tests.fixtures.api_errors import assert_error
from tests.fixtures.sql import violated_constraint

pytestmark = pytest.mark.django_db

PUBLIC = "/api/v1/shared-recordings/{}"


@pytest.fixture
def ready(host):
    return make_recording(meeting=make_meeting(host=host), status="ready")


def share(client, recording, **body):
    return client.post(f"/api/v1/recordings/{recording.pk}/share", body, format="json")


def _audit_text() -> str:
    return json.dumps(list(AuditLog.objects.values("event_type", "action", "target_id", "metadata",
                                                   "error_message")), default=str)


def test_only_a_hash_of_the_token_is_stored(as_user, host, ready):
    response = share(as_user(host), ready)
    assert response.status_code == 200, response.content
    assert response["Cache-Control"] == "no-store"
    token = response.json()["access_token"]
    row = Recording.objects.filter(pk=ready.pk).values().get()
    assert token not in json.dumps(row, default=str)
    assert row["share_token_hash"] == hashlib.sha256(token.encode()).hexdigest()
    assert "access_token" not in row


def test_the_token_is_shown_once_and_the_detail_says_until_when(as_user, host, ready, settings):
    client = as_user(host)
    before = timezone.now()
    body = share(client, ready).json()
    expires = timezone.datetime.fromisoformat(body["share_expires_at"])
    default = timedelta(seconds=settings.RECORDING_SHARE_DEFAULT_SECONDS)
    assert before + default <= expires <= timezone.now() + default
    detail = client.get(f"/api/v1/recordings/{ready.pk}").json()
    assert detail["is_public"] is True and detail["share_expires_at"] == body["share_expires_at"]
    assert "access_token" not in detail and body["access_token"] not in json.dumps(detail)
    listing = client.get(f"/api/v1/meetings/{ready.meeting_id}/recordings").json()
    assert body["access_token"] not in json.dumps(listing)
    assert listing["results"][0]["share_expires_at"] == body["share_expires_at"]
    # Sharing again cannot hand the token out again: the link exists, rotate replaces it.
    assert_error(share(client, ready), 409, "conflict")


def test_the_public_link_opens_the_recording(api, as_user, host, ready):
    token = share(as_user(host), ready).json()["access_token"]
    response = api.get(PUBLIC.format(token))
    assert response.status_code == 200, response.content
    body = response.json()
    assert body["recording_id"] == str(ready.pk) and body["share_expires_at"]
    assert "access_token" not in body and "share_token_hash" not in body
    # No cache between the client and us may keep answering once the link is unshared or rotated.
    assert response["Cache-Control"] == "no-store"


def test_unknown_and_expired_links_answer_the_same_404(api, as_user, host, ready):
    token = share(as_user(host), ready).json()["access_token"]
    unknown = assert_error(api.get(PUBLIC.format("dtshr_" + "A" * 43)), 404, "not_found")
    Recording.objects.filter(pk=ready.pk).update(share_expires_at=timezone.now() - timedelta(seconds=1))
    expired = assert_error(api.get(PUBLIC.format(token)), 404, "not_found")
    assert expired == unknown


def test_the_lookup_judges_expiry_at_the_given_time(as_user, host, ready):
    shared = recording_share(recording_id=ready.pk, actor_user_id=host.pk, expires_in_seconds=600)
    expires = shared.recording.share_expires_at
    assert shared.token not in repr(shared)
    assert recording_by_share_token(token=shared.token, now=expires - timedelta(microseconds=1)).pk == ready.pk
    for at in (expires, expires + timedelta(days=1)):
        with pytest.raises(Exception, match="No such shared recording"):
            recording_by_share_token(token=shared.token, now=at)


def test_an_expired_link_can_be_shared_afresh(api, as_user, host, ready):
    client = as_user(host)
    old = share(client, ready).json()["access_token"]
    Recording.objects.filter(pk=ready.pk).update(share_expires_at=timezone.now() - timedelta(seconds=1))
    new = share(client, ready).json()["access_token"]
    assert new != old
    assert api.get(PUBLIC.format(new)).status_code == 200
    assert_error(api.get(PUBLIC.format(old)), 404, "not_found")


def test_the_share_may_ask_for_a_lifetime_within_the_maximum(as_user, host, ready, settings):
    settings.RECORDING_SHARE_MAX_SECONDS = 3600
    client = as_user(host)
    error = assert_error(share(client, ready, expires_in_seconds=3601), 400, "invalid")
    assert "expires_in_seconds" in error["fields"]
    assert not Recording.objects.get(pk=ready.pk).is_public
    for bad in (0, -5, "60", 2**63):
        assert "expires_in_seconds" in assert_error(share(client, ready, expires_in_seconds=bad), 400,
                                                    "invalid")["fields"]
    before = timezone.now()
    body = share(client, ready, expires_in_seconds=3600).json()
    expires = timezone.datetime.fromisoformat(body["share_expires_at"])
    assert before + timedelta(seconds=3600) <= expires <= timezone.now() + timedelta(seconds=3600)


def test_unshare_ends_the_link(api, as_user, host, ready):
    client = as_user(host)
    token = share(client, ready).json()["access_token"]
    response = client.post(f"/api/v1/recordings/{ready.pk}/unshare", format="json")
    assert response.status_code == 200, response.content
    assert response.json()["is_public"] is False and response.json()["share_expires_at"] is None
    assert_error(api.get(PUBLIC.format(token)), 404, "not_found")
    row = Recording.objects.get(pk=ready.pk)
    assert (row.is_public, row.share_token_hash, row.share_expires_at) == (False, None, None)
    # Unsharing what is not shared changes nothing and records nothing.
    assert client.post(f"/api/v1/recordings/{ready.pk}/unshare", format="json").status_code == 200
    assert AuditLog.objects.filter(event_type="recording_unshared", target_id=str(ready.pk)).count() == 1


def test_rotate_issues_a_new_token_and_kills_the_old_one_at_once(api, as_user, host, ready):
    client = as_user(host)
    old = share(client, ready).json()["access_token"]
    response = client.post(f"/api/v1/recordings/{ready.pk}/share/rotate", format="json")
    assert response.status_code == 200, response.content
    new = response.json()["access_token"]
    assert new and new != old and response["Cache-Control"] == "no-store"
    assert_error(api.get(PUBLIC.format(old)), 404, "not_found")
    assert api.get(PUBLIC.format(new)).status_code == 200
    assert AuditLog.objects.filter(event_type="recording_share_rotated", target_id=str(ready.pk)).count() == 1


def test_rotate_needs_a_live_share(as_user, host, ready):
    assert_error(as_user(host).post(f"/api/v1/recordings/{ready.pk}/share/rotate", format="json"), 409, "conflict")


@pytest.mark.parametrize("action", ["share", "unshare", "share/rotate"])
def test_only_the_host_shares_unshares_and_rotates(as_user, host, other, action):
    recording = make_recording(meeting=make_meeting(host=host), status="ready")
    token = recording_share(recording_id=recording.pk, actor_user_id=host.pk).token if action != "share" else None
    assert_error(as_user(other).post(f"/api/v1/recordings/{recording.pk}/{action}", format="json"),
                 403, "permission_denied")
    if token:
        assert recording_by_share_token(token=token).pk == recording.pk


def test_share_unshare_and_rotate_are_audited_without_the_token(as_user, host, ready):
    client = as_user(host)
    tokens = [share(client, ready, expires_in_seconds=120).json()["access_token"]]
    tokens.append(client.post(f"/api/v1/recordings/{ready.pk}/share/rotate", format="json").json()["access_token"])
    client.post(f"/api/v1/recordings/{ready.pk}/unshare", format="json")
    rows = list(AuditLog.objects.filter(target_id=str(ready.pk)).order_by("created_at", "id")
                .values_list("event_type", "actor_user_id"))
    assert rows == [("recording_shared", host.pk), ("recording_share_rotated", host.pk),
                    ("recording_unshared", host.pk)]
    text = _audit_text()
    for token in tokens:
        assert token not in text and hashlib.sha256(token.encode()).hexdigest() not in text


def test_share_tokens_are_blanked_out_of_logs(as_user, host, ready):
    # Django logs every 404 with its path ("Not Found: /api/v1/shared-recordings/<token>").
    token = share(as_user(host), ready).json()["access_token"]
    assert token not in redact(f"Not Found: /api/v1/shared-recordings/{token}")


def test_the_database_refuses_a_share_without_a_hash_or_an_expiry(ready):
    for assignment in ("is_public = true", "is_public = true, share_token_hash = repeat('a', 64)",
                       "share_expires_at = now()"):
        assert violated_constraint(f"UPDATE recordings SET {assignment} WHERE recording_id = '{ready.pk}'") == (
            "recordings_share_complete"
        )


def test_the_admin_door_checks_the_operators_permission_in_the_service(host, other, ready):
    shared = recording_share(recording_id=ready.pk, actor_user_id=host.pk)
    for call in (recording_unshare, recording_share_rotate):
        with pytest.raises(PermissionDenied):
            call(recording_id=ready.pk, actor_user_id=other.pk, operator=True)
    assert recording_by_share_token(token=shared.token).pk == ready.pk
