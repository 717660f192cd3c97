"""Recordings: start (host, allow_recording), the status machine, file details, list, detail, share."""

from __future__ import annotations

import uuid

import pytest
from django.conf import settings
from django.utils import timezone

from audit.models import AuditLog
from meetings.models import Recording
from tests.factories import make_meeting, make_recording
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db


def test_start_recording(as_user, host):
    meeting = make_meeting(host=host, allow_recording=True)
    response = as_user(host).post(f"/api/v1/meetings/{meeting.pk}/recordings")
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["status"] == "recording" and body["started_at"] and body["ended_at"] is None
    assert body["storage_bucket"] == settings.RECORDINGS_STORAGE_BUCKET
    assert body["storage_path"] == f"meetings/{meeting.pk}/recordings/{body['recording_id']}"
    assert body["started_by_user_id"] == str(host.pk)
    assert "access_token" not in body
    assert AuditLog.objects.filter(event_type="recording_started", target_id=body["recording_id"]).count() == 1


def test_start_refused_without_allow_recording_or_after_the_end(as_user, host):
    meeting = make_meeting(host=host, allow_recording=False)
    assert_error(as_user(host).post(f"/api/v1/meetings/{meeting.pk}/recordings"), 409, "conflict")
    ended = make_meeting(host=host, allow_recording=True, status="ended", ended_at=timezone.now())
    assert_error(as_user(host).post(f"/api/v1/meetings/{ended.pk}/recordings"), 410, "gone")
    assert_error(as_user(host).post(f"/api/v1/meetings/{uuid.uuid4()}/recordings"), 404, "not_found")
    assert not Recording.objects.exists()


def test_the_status_machine(as_user, host):
    meeting = make_meeting(host=host, allow_recording=True)
    recording = make_recording(meeting=meeting)
    url = f"/api/v1/recordings/{recording.pk}"
    client = as_user(host)
    assert_error(client.patch(url, {"status": "ready"}, format="json"), 409, "conflict")
    body = client.patch(url, {"status": "processing", "duration_seconds": 61}, format="json").json()
    assert body["status"] == "processing" and body["ended_at"] and body["duration_seconds"] == 61
    assert_error(client.patch(url, {"status": "recording"}, format="json"), 409, "conflict")
    assert_error(client.patch(url, {"status": "processing"}, format="json"), 409, "conflict")
    body = client.patch(
        url, {"status": "ready", "file_size_bytes": 5_000_000_000, "video_codec": "VP9", "audio_codec": "Opus",
              "resolution": "1920x1080"}, format="json",
    ).json()
    assert (body["status"], body["file_size_bytes"], body["resolution"]) == ("ready", 5_000_000_000, "1920x1080")
    for status in ("failed", "processing", "recording"):
        assert_error(client.patch(url, {"status": status}, format="json"), 409, "conflict")
    assert_error(client.patch(url, {"video_codec": "AV1"}, format="json"), 409, "conflict")
    assert Recording.objects.get(pk=recording.pk).video_codec == "VP9"
    assert AuditLog.objects.filter(event_type="recording_updated").count() == 2


def test_processing_can_fail_with_a_message(as_user, host):
    recording = make_recording(meeting=make_meeting(host=host), status="processing")
    body = as_user(host).patch(f"/api/v1/recordings/{recording.pk}",
                               {"status": "failed", "error_message": "encoder crashed"}, format="json").json()
    assert (body["status"], body["error_message"]) == ("failed", "encoder crashed")


@pytest.mark.parametrize(("payload", "field"), [
    ({"status": "deleted"}, "status"),
    ({"file_size_bytes": -1}, "file_size_bytes"),
    ({"file_size_bytes": 2**63}, "file_size_bytes"),
    ({"duration_seconds": "60"}, "duration_seconds"),
    ({"resolution": "big"}, "resolution"),
    ({"storage_path": "/etc/passwd"}, "storage_path"),
    ({"is_public": True}, "is_public"),
])
def test_update_validation(as_user, host, payload, field):
    recording = make_recording(meeting=make_meeting(host=host))
    error = assert_error(as_user(host).patch(f"/api/v1/recordings/{recording.pk}", payload, format="json"),
                         400, "invalid")
    assert field in error["fields"]


def test_list_and_detail(as_user, host, django_assert_num_queries):
    meeting = make_meeting(host=host)
    recordings = [make_recording(meeting=meeting, status=status) for status in ("recording", "ready", "ready")]
    make_recording(meeting=make_meeting(host=host))
    client = as_user(host)
    with django_assert_num_queries(4):  # user, meeting's host, count, page
        body = client.get(f"/api/v1/meetings/{meeting.pk}/recordings").json()
    assert body["count"] == 3
    assert client.get(f"/api/v1/meetings/{meeting.pk}/recordings", {"status": "ready"}).json()["count"] == 2
    detail = client.get(f"/api/v1/recordings/{recordings[0].pk}").json()
    assert detail["recording_id"] == str(recordings[0].pk) and "access_token" not in detail
    assert_error(client.get(f"/api/v1/recordings/{uuid.uuid4()}"), 404, "not_found")


def test_share_a_ready_recording(as_user, host):
    recording = make_recording(meeting=make_meeting(host=host), status="ready")
    url = f"/api/v1/recordings/{recording.pk}/share"
    first = as_user(host).post(url).json()
    assert first["is_public"] is True and len(first["access_token"]) >= 40
    # The token is shown once: sharing again cannot give it back (a live link is replaced by rotating it).
    assert_error(as_user(host).post(url), 409, "conflict")
    assert AuditLog.objects.filter(event_type="recording_shared").count() == 1
    assert first["access_token"] not in str(list(AuditLog.objects.values_list("metadata", flat=True)))


def test_only_ready_recordings_are_shared(as_user, host):
    recording = make_recording(meeting=make_meeting(host=host), status="processing")
    assert_error(as_user(host).post(f"/api/v1/recordings/{recording.pk}/share"), 409, "conflict")
    assert Recording.objects.get(pk=recording.pk).share_token_hash is None
