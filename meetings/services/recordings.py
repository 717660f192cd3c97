"""Recordings: start, the status machine recording -> processing -> ready | failed, and public share links.

Only the meeting's host acts on its recordings. Every transition is a compare-and-set on the current status,
so two workers reporting at once cannot both move a recording.
"""

from __future__ import annotations

import secrets
import uuid
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now

from audit.models import ActorType
from audit.services import audit_record
from darktower.errors import Conflict, Gone, NotFound, PermissionDenied
from meetings.models import Meeting, MeetingStatus, Recording, RecordingStatus

TRANSITIONS: dict[str, frozenset[str]] = {
    RecordingStatus.RECORDING: frozenset({RecordingStatus.PROCESSING}),
    RecordingStatus.PROCESSING: frozenset({RecordingStatus.READY, RecordingStatus.FAILED}),
    RecordingStatus.READY: frozenset(),
    RecordingStatus.FAILED: frozenset(),
}
TERMINAL = frozenset({RecordingStatus.READY, RecordingStatus.FAILED})
METADATA_FIELDS = frozenset(
    {"file_size_bytes", "duration_seconds", "video_codec", "audio_codec", "resolution", "error_message"}
)
SHARE_TOKEN_BYTES = 32


def recording_start(*, meeting_id: uuid.UUID, actor_user_id: uuid.UUID) -> Recording:
    """Start recording a meeting that allows it (host only; the meeting must not have ended)."""
    with transaction.atomic():
        meeting = Meeting.objects.select_for_update(no_key=True).filter(pk=meeting_id).first()
        if meeting is None:
            raise NotFound("No such meeting.")
        if meeting.created_by_user_id != actor_user_id:
            raise PermissionDenied("Only the host may record this meeting.")
        if meeting.status == MeetingStatus.ENDED:
            raise Gone("The meeting has ended.")
        if not meeting.allow_recording:
            raise Conflict("Recording is not enabled for this meeting (allow_recording is off).")
        recording_id = uuid.uuid4()
        recording = Recording.objects.create(
            recording_id=recording_id, meeting=meeting, started_by_user_id=actor_user_id, started_at=Now(),
            storage_bucket=settings.RECORDINGS_STORAGE_BUCKET,
            storage_path=f"meetings/{meeting_id}/recordings/{recording_id}",
        )
        audit_record(
            event_type="recording_started", action="start", actor_type=ActorType.USER, actor_user_id=actor_user_id,
            target_type="recording", target_id=str(recording_id), metadata={"meeting_id": str(meeting_id)},
        )
    recording.refresh_from_db()
    return recording


def _host_recording(recording_id: uuid.UUID, actor_user_id: uuid.UUID) -> Recording:
    recording = Recording.objects.select_related("meeting").filter(pk=recording_id).first()
    if recording is None:
        raise NotFound("No such recording.")
    if recording.meeting.created_by_user_id != actor_user_id:
        raise PermissionDenied("Only the meeting's host may change its recordings.")
    return recording


def recording_update(
    *, recording_id: uuid.UUID, actor_user_id: uuid.UUID, status: str | None = None, **metadata: Any
) -> Recording:
    """Move a recording along recording -> processing -> ready | failed (anything else is a Conflict) and/or
    record its file size, duration and codecs. A finished recording (ready, failed) no longer changes."""
    unknown = set(metadata) - METADATA_FIELDS
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    with transaction.atomic():
        recording = _host_recording(recording_id, actor_user_id)
        current = recording.status
        changes: dict[str, Any] = dict(metadata)
        if status is not None:
            if status not in TRANSITIONS[current]:
                raise Conflict(f"A recording cannot go from {current} to {status}.")
            changes["status"] = status
            if current == RecordingStatus.RECORDING:
                changes["ended_at"] = Now()
        elif current in TERMINAL and changes:
            raise Conflict(f"The recording is {current} and no longer changes.")
        if changes:
            # Compare-and-set on the status read above.
            if not Recording.objects.filter(pk=recording_id, status=current).update(**changes):
                raise Conflict("The recording changed concurrently; read it again.")
            audit_record(
                event_type="recording_updated", action="update", actor_type=ActorType.USER,
                actor_user_id=actor_user_id, target_type="recording", target_id=str(recording_id),
                metadata={"from_status": current, "to_status": status or current, "fields": sorted(metadata)},
            )
        recording.refresh_from_db()
        return recording


def recording_share(*, recording_id: uuid.UUID, actor_user_id: uuid.UUID) -> Recording:
    """Make a ready recording public with an unguessable access token for its link. Sharing again keeps the
    existing token (links already handed out stay valid)."""
    with transaction.atomic():
        recording = _host_recording(recording_id, actor_user_id)
        if recording.status != RecordingStatus.READY:
            raise Conflict("Only a ready recording can be shared.")
        if recording.access_token and recording.is_public:
            return recording
        token = recording.access_token or secrets.token_urlsafe(SHARE_TOKEN_BYTES)
        unchanged = Recording.objects.filter(
            pk=recording_id, status=RecordingStatus.READY, access_token=recording.access_token
        )
        if not unchanged.update(is_public=True, access_token=token):
            raise Conflict("The recording changed concurrently; read it again.")
        audit_record(
            event_type="recording_shared", action="share", actor_type=ActorType.USER, actor_user_id=actor_user_id,
            target_type="recording", target_id=str(recording_id),
        )
        recording.refresh_from_db()
        return recording
