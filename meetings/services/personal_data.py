"""What the meetings app holds of a user, for their export and their erasure.

Export: the meetings they host, their participations (with the address and user agent they joined from) and the
recordings of their meetings (metadata only: never the share link's hash).

Erasure, inside the erasure's one transaction and before the user row goes:
- their meetings that have not ended end through `meeting_end`, as if they had ended them (participants closed,
  the MCs told through the outbox, the audit row). The platform has no co-host: a meeting has one host, its
  creator, so there is nobody to hand it to. The ended meetings stay, without a host, until retention;
- the recordings of their meetings (and any they started) are deleted, with the files' metadata they hold;
- their participations stay (a meeting's history and seat counts) but lose what names them: the display name
  becomes ANONYMISED_DISPLAY_NAME, the address and user agent NULL (user_id becomes NULL with the user row);
- bans of them are deleted: a ban names the banned user and keeps their display name, and a deleted user
  cannot join anyway. Bans they issued stay; banned_by_user_id becomes NULL with the user row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from django.db.models import F, Q

from darktower.errors import Gone
from meetings.models import Meeting, MeetingBan, MeetingParticipant, MeetingStatus, Recording
from meetings.services.meetings import meeting_end

ROWS_PER_FETCH = 500
ANONYMISED_DISPLAY_NAME = "Deleted user"

MEETING_FIELDS = (
    "meeting_id", "meeting_code", "display_name", "status", "max_participants", "enable_e2e_encryption",
    "require_auth", "allow_recording", "waiting_room_enabled", "allow_guests", "waiting_room_applies_to_users",
    "max_guests", "locked", "scheduled_start_time", "actual_start_time", "ended_at", "created_at", "updated_at",
    "metadata",
)
PARTICIPATION_FIELDS = (
    "meeting_id", "participant_id", "display_name", "role", "status", "joined_at", "left_at", "leave_reason",
    "ip_address", "user_agent", "client_version", "total_duration_seconds",
)
RECORDING_FIELDS = (
    "recording_id", "meeting_id", "started_at", "ended_at", "duration_seconds", "file_size_bytes", "storage_bucket",
    "storage_path", "video_codec", "audio_codec", "resolution", "status", "error_message", "is_public",
    "share_expires_at", "created_at", "updated_at",
)


def _recordings_of(user_id: uuid.UUID) -> Q:
    # Only a meeting's host starts and manages its recordings; started_by_user covers a host who later lost it.
    return Q(meeting__created_by_user_id=user_id) | Q(started_by_user_id=user_id)


def meetings_hosted_by_user(*, user_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    rows = Meeting.objects.filter(created_by_user_id=user_id).order_by("created_at", "meeting_id")
    return rows.values(*MEETING_FIELDS).iterator(chunk_size=ROWS_PER_FETCH)


def participations_of_user(*, user_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    rows = MeetingParticipant.objects.filter(user_id=user_id).order_by("joined_at", "id")
    return rows.values(*PARTICIPATION_FIELDS, meeting_code=F("meeting__meeting_code")).iterator(
        chunk_size=ROWS_PER_FETCH
    )


def recordings_of_user(*, user_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    rows = Recording.objects.filter(_recordings_of(user_id)).order_by("started_at", "recording_id")
    return rows.values(*RECORDING_FIELDS).iterator(chunk_size=ROWS_PER_FETCH)


def user_meetings_erase(*, user_id: uuid.UUID) -> dict[str, int]:
    """The meetings app's step of a user's erasure (see the module's docstring); the counts of what it did."""
    ended = 0
    open_meetings = Meeting.objects.filter(created_by_user_id=user_id).exclude(status=MeetingStatus.ENDED)
    for meeting_id in open_meetings.order_by("meeting_id").values_list("meeting_id", flat=True):
        try:
            ended += meeting_end(meeting_id=meeting_id, actor_user_id=user_id).meeting_ended
        except Gone:  # ended by its MCs since the list was read
            continue
    _, deleted = Recording.objects.filter(_recordings_of(user_id)).delete()
    anonymised = MeetingParticipant.objects.filter(user_id=user_id).update(
        display_name=ANONYMISED_DISPLAY_NAME, ip_address=None, user_agent=None
    )
    bans, _ = MeetingBan.objects.filter(principal=f"user:{user_id}").delete()
    return {
        "meetings_ended": ended,
        "recordings_deleted": deleted.get(Recording._meta.label, 0),
        "participations_anonymised": anonymised,
        "bans_deleted": bans,
    }
