"""Reads for the meetings API (and the fleet listings operators see through it)."""

from __future__ import annotations

import uuid

from django.db.models import F, FloatField, QuerySet
from django.db.models.functions import Cast, NullIf

from controllers.models import MediaHandler, MeetingController
from meetings.models import Meeting, MeetingParticipant, Recording


def parse_uuid(value: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(value)
    except (ValueError, AttributeError, TypeError):
        return None


def meetings_by_ref(ref: str) -> QuerySet[Meeting]:
    """A meeting by its id (a UUID) or its meeting_code (case-insensitive: codes are generated lowercase)."""
    meeting_id = parse_uuid(ref)
    if meeting_id is not None:
        return Meeting.objects.filter(pk=meeting_id)
    return Meeting.objects.filter(meeting_code=ref.strip().lower())


def meetings_hosted_by(user_id: uuid.UUID) -> QuerySet[Meeting]:
    """Served by idx_meetings_created_by."""
    return Meeting.objects.filter(created_by_user_id=user_id).order_by("-created_at", "-meeting_id")


def can_list_participants(*, meeting: Meeting, user_id: uuid.UUID) -> bool:
    """The host and anyone who joined the meeting may list its participants."""
    if meeting.created_by_user_id == user_id:
        return True
    return MeetingParticipant.objects.filter(meeting_id=meeting.pk, user_id=user_id).exists()


def participants_of(meeting_id: uuid.UUID) -> QuerySet[MeetingParticipant]:
    """Present and past participants, in join order (idx_participants_meeting_id)."""
    return MeetingParticipant.objects.filter(meeting_id=meeting_id).order_by("joined_at", "id")


def recordings_of(meeting_id: uuid.UUID) -> QuerySet[Recording]:
    return Recording.objects.filter(meeting_id=meeting_id).order_by("-started_at", "-recording_id")


def recording_with_meeting(recording_id: uuid.UUID) -> Recording | None:
    return Recording.objects.select_related("meeting").filter(pk=recording_id).first()


def controllers_listing() -> QuerySet[MeetingController]:
    """Meeting controllers with their load ratio (computed by the database), by region."""
    return MeetingController.objects.annotate(
        load=Cast("current_meetings", FloatField()) / Cast(NullIf(F("max_meetings"), 0), FloatField()),
    ).order_by("region", "controller_id")


def media_handlers_listing() -> QuerySet[MediaHandler]:
    return MediaHandler.objects.order_by("region", "handler_id")
