"""The join's request and answer as plain code: the two REST doors of meeting_join run on every join, where
building a DRF serializer per request cost more CPU than the rest of the request's Python.

The serializers JoinRequest, GuestTokenRequest and JoinResponse (meetings/api/serializers.py) stay the
definition: the API schema is generated from them, and a request body that is not a JSON object (a list, a
string, null: refused either way) is still validated by them. For the same input, the functions here give the
same validated data or the same field errors, and the same answer, to the byte: the tests in
tests/meetings/api/test_join_plain_shapes.py hold them to the serializers.
"""

from __future__ import annotations

import re
from datetime import datetime, tzinfo
from typing import Any, cast

from django.conf import settings
from django.utils import timezone
from rest_framework import serializers

from meetings.api.serializers import (
    MEETING_JOINER_FIELDS,
    REGION_VALIDATOR,
    GuestTokenRequest,
    JoinRequest,
)
from meetings.models import Meeting, MeetingParticipant
from meetings.services.participants import ROLE_HOST, JoinResult

# DRF's messages for a CharField, as its serializers word them.
_REQUIRED = "This field is required."
_NULL = "This field may not be null."
_BLANK = "This field may not be blank."
_NOT_A_STRING = "Not a valid string."
_NUL = "Null characters are not allowed."
_UNKNOWN = "Unknown field."

# The join's fields, in the serializers' order (their errors come in that order): max_length, region rule.
_FIELDS: tuple[tuple[str, int, bool], ...] = (
    ("region", 50, True),
    ("display_name", 255, False),
    ("client_version", 50, False),
)
_NAMES = frozenset(name for name, _, _ in _FIELDS)
# The region rule's own pattern (RegexValidator compiles it lazily).
_REGION_PATTERN = cast(re.Pattern[str], REGION_VALIDATOR.regex)


def _text(value: Any, *, max_length: int, region: bool) -> tuple[str | None, list[str]]:
    """A JSON value for a strict CharField (no blank, no null, trimmed): (the value, []) or (None, errors)."""
    if value is None:
        return None, [_NULL]
    if isinstance(value, str) and not value.strip():
        return None, [_BLANK]
    if not isinstance(value, str):
        return None, [_NOT_A_STRING]
    value = value.strip()
    errors: list[str] = []
    # The validators run in the field's order, and every one of them reports.
    if region and not _REGION_PATTERN.search(value):
        errors.append(str(REGION_VALIDATOR.message))
    if len(value) > max_length:
        errors.append(f"Ensure this field has no more than {max_length} characters.")
    if "\x00" in value:
        errors.append(_NUL)
    surrogate = next((char for char in value if 0xD800 <= ord(char) <= 0xDFFF), None)
    if surrogate is not None:
        errors.append(f"Surrogate characters are not allowed: U+{ord(surrogate):X}.")
    return (None, errors) if errors else (value, [])


def join_request(data: Any, *, guest: bool) -> dict[str, str]:
    """The join's validated body (JoinRequest, or GuestTokenRequest for a guest, whose display_name is
    required): region (DEFAULT_REGION when absent), and display_name and client_version when given. Refused
    with a DRF ValidationError naming each field, as the serializer would."""
    if type(data) is not dict:
        # A body that is not a JSON object: the serializer words its refusal.
        serializer = (GuestTokenRequest if guest else JoinRequest)(data=data)
        serializer.is_valid(raise_exception=True)
        return dict(serializer.validated_data)
    unknown = sorted(str(name) for name in data if name not in _NAMES)
    if unknown:
        raise serializers.ValidationError({name: [_UNKNOWN] for name in unknown})
    validated: dict[str, str] = {}
    errors: dict[str, list[str]] = {}
    for name, max_length, region in _FIELDS:
        if name not in data:
            if guest and name == "display_name":
                errors[name] = [_REQUIRED]
            continue
        value, refused = _text(data[name], max_length=max_length, region=region)
        if refused:
            errors[name] = refused
        else:
            assert value is not None
            validated[name] = value
    if errors:
        raise serializers.ValidationError(errors)
    validated.setdefault("region", settings.DEFAULT_REGION)
    return validated


def _moment(value: datetime | None, zone: tzinfo) -> str | None:
    """DRF's ISO 8601 rendering of a datetime: in `zone` (the current time zone), UTC written Z."""
    if not value:
        return None
    text = value.astimezone(zone).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def _uuid(value: Any) -> str | None:
    return None if value is None else str(value)


def _meeting(meeting: Meeting, *, host: bool, zone: tzinfo) -> dict[str, Any]:
    """MeetingSerializer's output for the host; MEETING_JOINER_FIELDS of it for anyone else."""
    data: dict[str, Any] = {
        "meeting_id": str(meeting.meeting_id), "meeting_code": meeting.meeting_code,
        "display_name": meeting.display_name, "host_user_id": _uuid(meeting.created_by_user_id),
        "max_participants": meeting.max_participants, "enable_e2e_encryption": meeting.enable_e2e_encryption,
        "require_auth": meeting.require_auth, "allow_recording": meeting.allow_recording,
        "waiting_room_enabled": meeting.waiting_room_enabled, "allow_guests": meeting.allow_guests,
        "waiting_room_applies_to_users": meeting.waiting_room_applies_to_users, "max_guests": meeting.max_guests,
        "locked": meeting.locked, "status": str(meeting.status),
        "scheduled_start_time": _moment(meeting.scheduled_start_time, zone),
        "actual_start_time": _moment(meeting.actual_start_time, zone), "ended_at": _moment(meeting.ended_at, zone),
        "assigned_controller_id": meeting.assigned_controller_id, "assigned_region": meeting.assigned_region,
        "created_at": _moment(meeting.created_at, zone), "updated_at": _moment(meeting.updated_at, zone),
    }
    return data if host else {name: data[name] for name in MEETING_JOINER_FIELDS}


def _participant(participant: MeetingParticipant, zone: tzinfo) -> dict[str, Any]:
    return {
        "participant_id": str(participant.participant_id), "meeting_id": str(participant.meeting_id),
        "user_id": _uuid(participant.user_id), "display_name": participant.display_name,
        "role": str(participant.role), "status": str(participant.status),
        "joined_at": _moment(participant.joined_at, zone), "left_at": _moment(participant.left_at, zone),
        "leave_reason": None if participant.leave_reason is None else str(participant.leave_reason),
        "total_duration_seconds": participant.total_duration_seconds,
    }


def join_answer(result: JoinResult) -> dict[str, Any]:
    """JoinResponse's output for `result`, the meeting trimmed for anyone but the host (meeting_for_joiner)."""
    assignment = result.assignment
    # Looked up once for the answer's seven datetimes: the current time zone is a context-local read.
    zone = timezone.get_current_timezone()
    return {
        "meeting": _meeting(result.meeting, host=result.participant.role == ROLE_HOST, zone=zone),
        "participant": _participant(result.participant, zone),
        "controller_id": assignment.controller_id,
        "region": assignment.region,
        "grpc_endpoint": assignment.grpc_endpoint,
        "webtransport_endpoint": assignment.webtransport_endpoint,
        "media_handlers": [
            {"handler_id": handler.handler_id, "webtransport_endpoint": handler.webtransport_endpoint,
             "grpc_endpoint": handler.grpc_endpoint}
            for handler in assignment.media_handlers
        ],
        "meeting_token": result.token.token,
        "token_type": "Bearer",
        "expires_in": result.token.expires_in,
    }

