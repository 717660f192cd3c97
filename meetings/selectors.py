"""Reads for the meetings API (and the fleet listings operators see through it).

Reads that only some callers may make (`participants_for_meeting`, `recordings_visible_to`,
`recording_visible_to`) check the viewer here and raise the domain errors NotFound / PermissionDenied, so every
door that lists them applies the same rule."""

from __future__ import annotations

import hmac
import uuid
from datetime import datetime

from django.db import connection
from django.db.models import Q, QuerySet
from django.utils import timezone

from darktower.errors import NotFound, PermissionDenied
from meetings.models import Meeting, MeetingBan, MeetingParticipant, ParticipantStatus, Recording

# The regions where an MC has ever registered, one index probe per region on idx_controllers_region (a loose
# index scan): its cost follows the number of regions, not the number of MCs. Deregistered MCs keep their rows,
# so their regions stay known.
_KNOWN_REGIONS_SQL = """
WITH RECURSIVE known(region) AS (
    (SELECT region FROM meeting_controllers ORDER BY region LIMIT 1)
    UNION ALL
    SELECT (SELECT region FROM meeting_controllers WHERE region > known.region ORDER BY region LIMIT 1)
    FROM known WHERE known.region IS NOT NULL
)
SELECT region FROM known WHERE region IS NOT NULL
"""


def known_regions() -> list[str]:
    """The regions where a meeting controller has registered, sorted."""
    with connection.cursor() as cursor:
        cursor.execute(_KNOWN_REGIONS_SQL)
        return [row[0] for row in cursor.fetchall()]


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def meeting_ref_lookup(ref: str) -> tuple[str, uuid.UUID | str] | None:
    """(column, value) of a meeting ref: its id (a UUID) or its meeting_code (case-insensitive: codes are
    generated lowercase). None for a ref with a NUL character, which matches nothing (PostgreSQL refuses NUL in
    text)."""
    meeting_id = parse_uuid(ref)
    if meeting_id is not None:
        return "meeting_id", meeting_id
    if "\x00" in ref:
        return None
    return "meeting_code", ref.strip().lower()


def meetings_by_ref(ref: str) -> QuerySet[Meeting]:
    """A meeting by its id or its meeting_code (meeting_ref_lookup); a ref with a NUL character matches nothing,
    without a query."""
    lookup = meeting_ref_lookup(ref)
    if lookup is None:
        return Meeting.objects.none()
    column, value = lookup
    return Meeting.objects.filter(**{column: value})


def meetings_hosted_by(user_id: uuid.UUID) -> QuerySet[Meeting]:
    """Served by idx_meetings_created_by."""
    return Meeting.objects.filter(created_by_user_id=user_id).order_by("-created_at", "-meeting_id")


def _meeting_host(meeting_id: uuid.UUID) -> uuid.UUID | None:
    """The meeting's host (None when the host's account is gone); NotFound when there is no such meeting."""
    row = Meeting.objects.filter(pk=meeting_id).values("created_by_user_id").first()
    if row is None:
        raise NotFound("No such meeting.")
    host_id: uuid.UUID | None = row["created_by_user_id"]
    return host_id


def participants_for_meeting(*, meeting_id: uuid.UUID, viewer_id: uuid.UUID) -> QuerySet[MeetingParticipant]:
    """Admitted participants, present and past, in join order (idx_participants_meeting_id), for the host and
    for users present and admitted now: a participant who left or was removed, or waits to be admitted, may not;
    PermissionDenied for everyone else. The waiting room is the host's (participants_waiting)."""
    participants = MeetingParticipant.objects.filter(
        meeting_id=meeting_id, status=ParticipantStatus.ADMITTED
    ).order_by("joined_at", "id")
    if (
        _meeting_host(meeting_id) != viewer_id
        and not participants.filter(user_id=viewer_id, left_at__isnull=True).exists()
    ):
        raise PermissionDenied("Only the host and the meeting's present participants may list its participants.")
    return participants


def participant_visible_to(
    *, meeting_id: uuid.UUID, participant_id: uuid.UUID, viewer_id: uuid.UUID
) -> MeetingParticipant:
    """One participant, for the meeting's host and for the user it is; NotFound for everyone else (whether it
    exists is not theirs to learn)."""
    participant = MeetingParticipant.objects.filter(
        Q(user_id=viewer_id) | Q(meeting__created_by_user_id=viewer_id),
        meeting_id=meeting_id, participant_id=participant_id,
    ).first()
    if participant is None:
        raise NotFound("No such participant.")
    return participant


def participants_waiting(*, meeting_id: uuid.UUID, viewer_id: uuid.UUID) -> QuerySet[MeetingParticipant]:
    """The meeting's waiting room, in join order (idx_participants_present), for its host only."""
    if _meeting_host(meeting_id) != viewer_id:
        raise PermissionDenied("Only the host may see this meeting's waiting room.")
    return MeetingParticipant.objects.filter(
        meeting_id=meeting_id, status=ParticipantStatus.WAITING, left_at__isnull=True
    ).order_by("joined_at", "id")


def meeting_bans(*, meeting_id: uuid.UUID, viewer_id: uuid.UUID) -> QuerySet[MeetingBan]:
    """The meeting's bans, oldest first (uq_meeting_bans_meeting_principal), for its host only."""
    if _meeting_host(meeting_id) != viewer_id:
        raise PermissionDenied("Only the host may see this meeting's bans.")
    return MeetingBan.objects.filter(meeting_id=meeting_id).order_by("created_at", "ban_id")


def recordings_visible_to(*, meeting_id: uuid.UUID, viewer_id: uuid.UUID) -> QuerySet[Recording]:
    """A meeting's recordings, newest first, for its host only."""
    if _meeting_host(meeting_id) != viewer_id:
        raise PermissionDenied("Only the host may list this meeting's recordings.")
    return Recording.objects.filter(meeting_id=meeting_id).order_by("-started_at", "-recording_id")


def recording_visible_to(*, recording_id: uuid.UUID, viewer_id: uuid.UUID) -> Recording:
    """One recording, for its meeting's host only."""
    recording = Recording.objects.select_related("meeting").filter(pk=recording_id).first()
    if recording is None:
        raise NotFound("No such recording.")
    if recording.meeting.created_by_user_id != viewer_id:
        raise PermissionDenied("Only the meeting's host may see its recordings.")
    return recording


def recording_by_share_token(*, token: str, now: datetime | None = None) -> Recording:
    """The recording a public share link opens: the presented token's hash found by the unique index on
    share_token_hash, shared and not expired at `now` (default: the current time). An unknown, unshared,
    rotated-away or expired token is the same NotFound, so the answer says nothing about whether a link
    ever existed. The lookup compares hashes, not tokens: timing reveals nothing about a stored token."""
    digest = Recording.share_token_digest(token)
    recording = Recording.objects.filter(share_token_hash=digest, is_public=True).first()
    if (
        recording is None
        or not hmac.compare_digest(recording.share_token_hash or "", digest)
        or not recording.share_is_live(now or timezone.now())
    ):
        raise NotFound("No such shared recording.")
    return recording
