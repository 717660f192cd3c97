"""Request and response shapes of the meetings API. Requests reject unknown fields and loose types."""

from __future__ import annotations

from django.conf import settings
from django.core.validators import RegexValidator
from rest_framework import serializers

from darktower.api.serializers import (
    INT32_MAX,
    INT64_MAX,
    StrictBooleanField,
    StrictCharField,
    StrictIntegerField,
    StrictSerializer,
)
from meetings.models import (
    DEFAULT_MAX_GUESTS,
    LeaveReason,
    Meeting,
    MeetingBan,
    MeetingParticipant,
    Recording,
    RecordingStatus,
)

MAX_PARTICIPANTS_LIMIT = 1000
REGION_VALIDATOR = RegexValidator(r"^[a-z0-9][a-z0-9-]*$", "Lowercase letters, digits and dashes, e.g. us-east-1.")


# --- Requests -------------------------------------------------------------------------------------


class MeetingSettingsFields(StrictSerializer):
    display_name = StrictCharField(max_length=255, required=False)
    max_participants = StrictIntegerField(min_value=1, max_value=MAX_PARTICIPANTS_LIMIT, required=False)
    enable_e2e_encryption = StrictBooleanField(required=False)
    require_auth = StrictBooleanField(required=False)
    allow_recording = StrictBooleanField(required=False)
    waiting_room_enabled = StrictBooleanField(required=False)
    allow_guests = StrictBooleanField(required=False)
    waiting_room_applies_to_users = StrictBooleanField(
        required=False, help_text="With waiting_room_enabled, signed-in users wait too (guests always do)."
    )
    max_guests = StrictIntegerField(
        min_value=0, max_value=MAX_PARTICIPANTS_LIMIT, required=False,
        help_text=f"Seats guests may hold at once, within max_participants (default {DEFAULT_MAX_GUESTS}).",
    )
    locked = StrictBooleanField(required=False, help_text="No new joins but the host's.")
    scheduled_start_time = serializers.DateTimeField(required=False, allow_null=True)


class MeetingCreateRequest(MeetingSettingsFields):
    display_name = StrictCharField(max_length=255)


class MeetingUpdateRequest(MeetingSettingsFields):
    """Only the fields present change."""


class JoinRequest(StrictSerializer):
    region = StrictCharField(
        max_length=50, required=False, validators=[REGION_VALIDATOR],
        help_text="Region whose meeting controllers to use; default: the server's DEFAULT_REGION.",
    )
    display_name = StrictCharField(max_length=255, required=False, help_text="Default: the user's display name.")
    client_version = StrictCharField(max_length=50, required=False)

    def validate(self, attrs: dict) -> dict:
        attrs.setdefault("region", settings.DEFAULT_REGION)
        return attrs


class GuestTokenRequest(JoinRequest):
    display_name = StrictCharField(max_length=255)


class LeaveRequest(StrictSerializer):
    leave_reason = serializers.ChoiceField(
        choices=[LeaveReason.VOLUNTARY, LeaveReason.KICKED, LeaveReason.CONNECTION_LOST],
        default=LeaveReason.VOLUNTARY, help_text="kicked: host only.",
    )


class DenyRequest(StrictSerializer):
    ban = StrictBooleanField(
        required=False, default=False, help_text="Also ban the participant from the meeting until the host lifts it."
    )


class RecordingUpdateRequest(StrictSerializer):
    status = serializers.ChoiceField(
        choices=RecordingStatus.choices, required=False,
        help_text="Allowed: recording -> processing, processing -> ready | failed; anything else answers 409.",
    )
    file_size_bytes = StrictIntegerField(min_value=0, max_value=INT64_MAX, required=False)
    duration_seconds = StrictIntegerField(min_value=0, max_value=INT32_MAX, required=False)
    video_codec = StrictCharField(max_length=50, required=False)
    audio_codec = StrictCharField(max_length=50, required=False)
    resolution = StrictCharField(
        max_length=20, required=False, validators=[RegexValidator(r"^\d{1,5}x\d{1,5}$", "WIDTHxHEIGHT, e.g. 1920x1080")]
    )
    error_message = StrictCharField(max_length=2000, required=False)


class RecordingShareRequest(StrictSerializer):
    expires_in_seconds = StrictIntegerField(
        min_value=1, max_value=INT32_MAX, required=False,
        help_text="Lifetime of the link: default RECORDING_SHARE_DEFAULT_SECONDS, at most RECORDING_SHARE_MAX_SECONDS "
        "(400 beyond it). On rotate, default: the link keeps its end.",
    )


# --- Responses ------------------------------------------------------------------------------------


# What a joiner needs to know before and while joining: which meeting, whether and when it runs, how it may be
# joined (signed in or as a guest, through a waiting room, not while locked) and what it does with their media
# (end-to-end encryption, recording). Everything else is the host's: who hosts it (a user id), its seat and
# guest limits, which MC and region run it (the fleet's layout; a joiner gets its MC in the join's answer), and
# its bookkeeping times.
MEETING_JOINER_FIELDS = (
    "meeting_id", "meeting_code", "display_name", "status", "scheduled_start_time", "actual_start_time", "ended_at",
    "require_auth", "allow_guests", "waiting_room_enabled", "locked", "enable_e2e_encryption", "allow_recording",
)


class MeetingSerializer(serializers.ModelSerializer):
    """A meeting as its host sees it (every answer to the host's own requests)."""

    host_user_id = serializers.UUIDField(source="created_by_user_id", read_only=True, allow_null=True)

    class Meta:
        model = Meeting
        fields = [
            "meeting_id", "meeting_code", "display_name", "host_user_id", "max_participants",
            "enable_e2e_encryption", "require_auth", "allow_recording", "waiting_room_enabled", "allow_guests",
            "waiting_room_applies_to_users", "max_guests", "locked", "status", "scheduled_start_time",
            "actual_start_time", "ended_at", "assigned_controller_id", "assigned_region", "created_at", "updated_at",
        ]
        read_only_fields = fields


def meeting_for_joiner(data: dict) -> dict:
    """A host's view of a meeting (MeetingSerializer's output) trimmed to MEETING_JOINER_FIELDS."""
    return {name: data[name] for name in MEETING_JOINER_FIELDS}


class MeetingViewSerializer(MeetingSerializer):
    """The schema of a meeting that any caller may read: the host gets every field, anyone else only
    MEETING_JOINER_FIELDS (meeting_for_joiner). The host-only fields are therefore optional here."""

    host_user_id = serializers.UUIDField(source="created_by_user_id", required=False, allow_null=True)
    max_participants = serializers.IntegerField(required=False)
    max_guests = serializers.IntegerField(required=False)
    waiting_room_applies_to_users = serializers.BooleanField(required=False)
    assigned_controller_id = serializers.CharField(required=False, allow_null=True)
    assigned_region = serializers.CharField(required=False, allow_null=True)
    created_at = serializers.DateTimeField(required=False)
    updated_at = serializers.DateTimeField(required=False)

    class Meta(MeetingSerializer.Meta):
        read_only_fields = list(MEETING_JOINER_FIELDS)


class ParticipantSerializer(serializers.ModelSerializer):
    meeting_id = serializers.UUIDField(read_only=True)
    user_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = MeetingParticipant
        fields = [
            "participant_id", "meeting_id", "user_id", "display_name", "role", "status", "joined_at", "left_at",
            "leave_reason", "total_duration_seconds",
        ]
        read_only_fields = fields


class MediaHandlerAssignment(serializers.Serializer):
    handler_id = serializers.CharField()
    webtransport_endpoint = serializers.CharField()
    grpc_endpoint = serializers.CharField()


class BanSerializer(serializers.ModelSerializer):
    """A ban as the host sees it: who (a user's id, or a guest's display name), never a guest's address."""

    kind = serializers.ChoiceField(choices=["user", "guest"], read_only=True)
    user_id = serializers.UUIDField(read_only=True, allow_null=True)
    banned_at = serializers.DateTimeField(source="created_at", read_only=True)

    class Meta:
        model = MeetingBan
        fields = ["ban_id", "kind", "user_id", "participant_id", "display_name", "banned_at"]
        read_only_fields = fields


class JoinResponse(serializers.Serializer):
    meeting = MeetingViewSerializer(help_text="Every field for the host; what a joiner needs for anyone else.")
    participant = ParticipantSerializer()
    controller_id = serializers.CharField(help_text="The meeting controller to connect to.")
    region = serializers.CharField()
    grpc_endpoint = serializers.CharField()
    webtransport_endpoint = serializers.CharField(allow_null=True)
    media_handlers = MediaHandlerAssignment(
        many=True, help_text="The media handlers the meeting controller was given for this meeting (empty when it "
        "was assigned without asking it)."
    )
    meeting_token = serializers.CharField(
        help_text="EdDSA JWT for the meeting controller (claims meeting_id, participant_id, role, waiting_room; "
        "5 minutes)."
    )
    token_type = serializers.CharField()
    expires_in = serializers.IntegerField()


class RecordingSerializer(serializers.ModelSerializer):
    meeting_id = serializers.UUIDField(read_only=True)
    started_by_user_id = serializers.UUIDField(read_only=True, allow_null=True)

    class Meta:
        model = Recording
        fields = [
            "recording_id", "meeting_id", "started_by_user_id", "status", "started_at", "ended_at",
            "duration_seconds", "file_size_bytes", "storage_bucket", "storage_path", "video_codec", "audio_codec",
            "resolution", "error_message", "is_public", "share_expires_at", "created_at", "updated_at",
        ]
        read_only_fields = fields
        extra_kwargs = {
            "is_public": {"help_text": "Shared; the link opens it until share_expires_at (later: expired)."},
            "share_expires_at": {"help_text": "When the share link stops opening it; null when not shared."},
        }


class RecordingShareResponse(RecordingSerializer):
    """The recording with its new link: the token is shown here once and never again (only its hash is kept)."""

    access_token = serializers.CharField(read_only=True, help_text="Token of the public link; shown once.")
    share_url = serializers.CharField(read_only=True, help_text="The public link (GET, no sign-in); shown once.")

    class Meta(RecordingSerializer.Meta):
        fields = [*RecordingSerializer.Meta.fields, "access_token", "share_url"]
        read_only_fields = fields


class SharedRecordingSerializer(serializers.ModelSerializer):
    """What a public share link shows: the recording's file, not its meeting or its host."""

    class Meta:
        model = Recording
        fields = [
            "recording_id", "status", "started_at", "ended_at", "duration_seconds", "file_size_bytes",
            "storage_bucket", "storage_path", "video_codec", "audio_codec", "resolution", "share_expires_at",
        ]
        read_only_fields = fields
