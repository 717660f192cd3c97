"""Recordings: start, the status machine recording -> processing -> ready | failed, and public share links.

Only the meeting's host acts on its recordings; operators allowed to (meetings.manage_share_recording) may also
unshare and rotate share links from the admin. A share link's token is stored only as its SHA-256 hash and
returned once; every link ends at share_expires_at. Every transition is a compare-and-set on the current status,
so two workers reporting at once cannot both move a recording.
"""

from __future__ import annotations

import secrets
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from audit.models import ActorType
from audit.services import audit_record
from darktower.errors import Conflict, Gone, InvalidInput, NotFound, PermissionDenied
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
SHARE_TOKEN_PREFIX = "dtshr_"
MANAGE_SHARE_PERMISSION = "meetings.manage_share_recording"


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


@dataclass(frozen=True)
class SharedRecording:
    """A recording with the token of its new share link: the only time the token exists outside the caller's
    hands (only its hash is stored), so the door shows it once and keeps it nowhere."""

    recording: Recording
    token: str = field(repr=False)


def share_lifetime(expires_in_seconds: int | None) -> timedelta:
    """The lifetime a share asks for: RECORDING_SHARE_DEFAULT_SECONDS when none, at most
    RECORDING_SHARE_MAX_SECONDS (InvalidInput on expires_in_seconds beyond it)."""
    if expires_in_seconds is None:
        return timedelta(seconds=settings.RECORDING_SHARE_DEFAULT_SECONDS)
    maximum = settings.RECORDING_SHARE_MAX_SECONDS
    if not 1 <= expires_in_seconds <= maximum:
        message = f"Between 1 and {maximum} seconds."
        raise InvalidInput(f"A share link lives at most {maximum} seconds.", fields={"expires_in_seconds": [message]})
    return timedelta(seconds=expires_in_seconds)


def _new_share_token() -> tuple[str, str]:
    """(token, its digest). The prefix lets the log filter blank a token out of a logged path."""
    token = SHARE_TOKEN_PREFIX + secrets.token_urlsafe(SHARE_TOKEN_BYTES)
    return token, Recording.share_token_digest(token)


def _shared_recording(*, recording_id: uuid.UUID, actor_user_id: uuid.UUID, operator: bool) -> Recording:
    """The recording a share change acts on: its meeting's host, or (operator=True, the admin) a user holding
    meetings.manage_share_recording."""
    if not operator:
        return _host_recording(recording_id, actor_user_id)
    actor = get_user_model().objects.filter(pk=actor_user_id, is_active=True).first()
    if actor is None or not actor.has_perm(MANAGE_SHARE_PERMISSION):
        raise PermissionDenied("Only the host, or an operator allowed to manage share links, may do this.")
    recording = Recording.objects.select_related("meeting").filter(pk=recording_id).first()
    if recording is None:
        raise NotFound("No such recording.")
    return recording


def _share_audit(event_type: str, action: str, *, recording: Recording, actor_user_id: uuid.UUID, operator: bool,
                 expires_at: datetime | None) -> None:
    """One audit row per share change; never the token nor its hash."""
    audit_record(
        event_type=event_type, action=action, actor_type=ActorType.USER, actor_user_id=actor_user_id,
        target_type="recording", target_id=str(recording.pk),
        metadata={"by": "operator" if operator else "host",
                  "expires_at": expires_at.isoformat() if expires_at else None},
    )


def recording_share(
    *, recording_id: uuid.UUID, actor_user_id: uuid.UUID, expires_in_seconds: int | None = None,
    now: datetime | None = None,
) -> SharedRecording:
    """Give a ready recording a public link (host only) that ends after `expires_in_seconds` (share_lifetime).
    Only the token's hash is stored, so a live link cannot be handed out again: sharing a recording whose link
    is live is a Conflict (rotate replaces it); an expired one is shared afresh with a new token."""
    lifetime = share_lifetime(expires_in_seconds)
    now = now or timezone.now()
    with transaction.atomic():
        recording = _host_recording(recording_id, actor_user_id)
        if recording.status != RecordingStatus.READY:
            raise Conflict("Only a ready recording can be shared.")
        if recording.share_is_live(now):
            raise Conflict("The recording is already shared; rotate its link for a new token, or unshare it.")
        token, digest = _new_share_token()
        expires_at = now + lifetime
        # Compare-and-set on the share read above (none, or the expired one this replaces).
        # (share_token_hash=None is IS NULL.)
        unchanged = Recording.objects.filter(
            pk=recording_id, status=RecordingStatus.READY, share_token_hash=recording.share_token_hash
        )
        if not unchanged.update(is_public=True, share_token_hash=digest, share_expires_at=expires_at):
            raise Conflict("The recording changed concurrently; read it again.")
        _share_audit("recording_shared", "share", recording=recording, actor_user_id=actor_user_id,
                     operator=False, expires_at=expires_at)
        recording.refresh_from_db()
        return SharedRecording(recording=recording, token=token)


def recording_share_rotate(
    *, recording_id: uuid.UUID, actor_user_id: uuid.UUID, expires_in_seconds: int | None = None,
    operator: bool = False, now: datetime | None = None,
) -> SharedRecording:
    """Replace a live share link's token: the old token stops opening the recording at commit, the new one is
    returned once. The link keeps its end unless `expires_in_seconds` sets a new one (share_lifetime)."""
    lifetime = None if expires_in_seconds is None else share_lifetime(expires_in_seconds)
    now = now or timezone.now()
    with transaction.atomic():
        recording = _shared_recording(recording_id=recording_id, actor_user_id=actor_user_id, operator=operator)
        if not recording.share_is_live(now):
            raise Conflict("The recording is not shared (or its link has expired); share it for a new link.")
        token, digest = _new_share_token()
        expires_at = now + lifetime if lifetime is not None else recording.share_expires_at
        if not Recording.objects.filter(pk=recording_id, share_token_hash=recording.share_token_hash).update(
            share_token_hash=digest, share_expires_at=expires_at
        ):
            raise Conflict("The recording changed concurrently; read it again.")
        _share_audit("recording_share_rotated", "rotate_share", recording=recording, actor_user_id=actor_user_id,
                     operator=operator, expires_at=expires_at)
        recording.refresh_from_db()
        return SharedRecording(recording=recording, token=token)


def recording_unshare(*, recording_id: uuid.UUID, actor_user_id: uuid.UUID, operator: bool = False) -> Recording:
    """End a recording's share link at once (live or expired). Unsharing what is not shared changes nothing and
    records nothing."""
    with transaction.atomic():
        recording = _shared_recording(recording_id=recording_id, actor_user_id=actor_user_id, operator=operator)
        if recording.share_token_hash is None:
            return recording
        if not Recording.objects.filter(pk=recording_id, share_token_hash=recording.share_token_hash).update(
            is_public=False, share_token_hash=None, share_expires_at=None
        ):
            raise Conflict("The recording changed concurrently; read it again.")
        _share_audit("recording_unshared", "unshare", recording=recording, actor_user_id=actor_user_id,
                     operator=operator, expires_at=recording.share_expires_at)
        recording.refresh_from_db()
        return recording
