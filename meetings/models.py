"""Meetings, who joined them, their recordings, and which meeting controller runs them.

`meeting_assignments` records which MC runs which meeting, one active row per meeting.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import datetime

from django.conf import settings
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import updated_at_trigger


class MeetingStatus(models.TextChoices):
    SCHEDULED = "scheduled"
    ACTIVE = "active"
    ENDED = "ended"


class LeaveReason(models.TextChoices):
    VOLUNTARY = "voluntary"
    KICKED = "kicked"
    CONNECTION_LOST = "connection_lost"
    MEETING_ENDED = "meeting_ended"
    # The host turned a waiting participant away (not a ban unless the host bans too).
    DENIED = "denied"


class ParticipantStatus(models.TextChoices):
    """A participant takes a seat only once admitted: joiners of a meeting with a waiting room wait."""

    WAITING = "waiting"
    ADMITTED = "admitted"


# Guests a meeting admits at once unless its host says otherwise (meetings.max_guests).
DEFAULT_MAX_GUESTS = 10


class RecordingStatus(models.TextChoices):
    RECORDING = "recording"
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"


class Meeting(models.Model):
    meeting_id = models.UUIDField(
        verbose_name="meeting ID", primary_key=True, default=uuid.uuid4, db_default=RandomUUID())
    created_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="meetings_created", db_column="created_by_user_id",
        db_comment="Host; NULL once the user is deleted",
    )
    display_name = models.CharField(max_length=255)
    meeting_code = models.CharField(
        max_length=20, unique=True, db_comment="Short human-readable code from an unambiguous alphabet"
    )
    max_participants = models.IntegerField(
        default=100, db_default=100, db_comment="Seats: joins beyond it answer 409 (1..1000 through the API)"
    )

    enable_e2e_encryption = models.BooleanField(
        verbose_name="end-to-end encryption",
        default=True, db_default=True, db_comment="Media keys stay with the clients (MC and MH forward only)"
    )
    require_auth = models.BooleanField(default=False, db_default=False, db_comment="Refuse guests")
    allow_recording = models.BooleanField(default=False, db_default=False, db_comment="The host may start recordings")
    waiting_room_enabled = models.BooleanField(
        default=False, db_default=False, db_comment="Joiners wait for the host to admit them"
    )
    allow_guests = models.BooleanField(
        default=False, db_default=False, db_comment="Guests may obtain a guest token (ignored when require_auth)"
    )
    waiting_room_applies_to_users = models.BooleanField(
        default=False, db_default=False,
        db_comment="With waiting_room_enabled, signed-in users (not the host) wait too; guests always wait",
    )
    max_guests = models.IntegerField(
        default=DEFAULT_MAX_GUESTS, db_default=DEFAULT_MAX_GUESTS,
        db_comment="Seats guests may hold at once (admitted and present), within max_participants; 0: none",
    )
    locked = models.BooleanField(
        default=False, db_default=False, db_comment="The host locked the meeting: no new joins but the host's"
    )

    status = models.CharField(
        max_length=20, choices=MeetingStatus.choices, default=MeetingStatus.SCHEDULED, db_default="scheduled",
        db_comment="scheduled, active (first join) or ended",
    )
    scheduled_start_time = models.DateTimeField(null=True, blank=True, db_comment="Announced start; informative")
    actual_start_time = models.DateTimeField(null=True, blank=True, db_comment="Time of the first join")
    ended_at = models.DateTimeField(null=True, blank=True)

    assigned_controller_id = models.CharField(
        verbose_name="assigned controller ID",
        max_length=255, null=True, blank=True,
        db_comment="Meeting controller handling the meeting (denormalised from meeting_assignments)",
    )
    assigned_region = models.CharField(
        max_length=50, null=True, blank=True, db_comment="Region of assigned_controller_id (denormalised)"
    )

    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    metadata = models.JSONField(default=dict, db_default={}, blank=True, null=True)

    class Meta:
        db_table = "meetings"
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=MeetingStatus.values), name="meetings_status_valid"
            ),
            models.CheckConstraint(condition=Q(max_participants__gte=1), name="meetings_max_participants_positive"),
            models.CheckConstraint(condition=Q(max_guests__gte=0), name="meetings_max_guests_nonnegative"),
            models.CheckConstraint(
                condition=Q(status="ended", ended_at__isnull=False) | ~Q(status="ended"),
                name="meetings_ended_has_ended_at",
            ),
        ]
        indexes = [
            models.Index(fields=["created_by_user"], name="idx_meetings_created_by"),
            models.Index(fields=["meeting_code"], name="idx_meetings_meeting_code"),
            models.Index(fields=["status"], name="idx_meetings_status"),
            models.Index(fields=["scheduled_start_time"], name="idx_meetings_scheduled_start"),
            models.Index(fields=["assigned_controller_id"], name="idx_meetings_controller"),
        ]
        triggers = [updated_at_trigger("meetings")]

    def __str__(self) -> str:
        return f"{self.display_name} ({self.meeting_code})"


class MeetingParticipant(models.Model):
    id = models.BigAutoField(primary_key=True)
    meeting = models.ForeignKey(Meeting, on_delete=models.CASCADE, related_name="participants")
    participant_id = models.UUIDField(verbose_name="participant ID", db_comment="Session id generated at join")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="participations", db_comment="NULL for guests",
    )
    display_name = models.CharField(max_length=255)
    role = models.CharField(
        max_length=20, default="participant", db_default="participant",
        db_comment="host, participant or guest; carried in the meeting token",
    )
    status = models.CharField(
        max_length=20, choices=ParticipantStatus.choices, default=ParticipantStatus.ADMITTED, db_default="admitted",
        db_comment="waiting (in the waiting room: no seat) or admitted (holds a seat while present)",
    )

    joined_at = models.DateTimeField(default=timezone.now, db_default=Now())
    left_at = models.DateTimeField(null=True, blank=True)
    leave_reason = models.CharField(
        max_length=50, choices=LeaveReason.choices, null=True, blank=True,
        db_comment="voluntary, kicked, connection_lost, meeting_ended or denied; NULL while present",
    )

    ip_address = models.GenericIPAddressField(
        verbose_name="IP address",
        null=True, blank=True, db_comment="Client address at join (personal data)"
    )
    user_agent = models.TextField(null=True, blank=True, db_comment="Client User-Agent at join")
    client_version = models.CharField(max_length=50, null=True, blank=True, db_comment="Dark Tower client version")

    total_duration_seconds = models.IntegerField(
        verbose_name="total duration (s)",
        default=0, db_default=0, null=True, db_comment="Seconds present, computed when the participant leaves"
    )

    class Meta:
        db_table = "meeting_participants"
        constraints = [
            models.UniqueConstraint(
                fields=["meeting", "participant_id"], name="meeting_participants_meeting_id_participant_id_key"
            ),
            models.CheckConstraint(
                condition=Q(leave_reason__isnull=True) | Q(leave_reason__in=LeaveReason.values),
                name="meeting_participants_leave_reason_valid",
            ),
            models.CheckConstraint(
                condition=Q(role__in=["host", "participant", "guest"]), name="meeting_participants_role_valid"
            ),
            models.CheckConstraint(
                condition=Q(status__in=ParticipantStatus.values), name="meeting_participants_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(total_duration_seconds__gte=0), name="meeting_participants_duration_nonnegative"
            ),
        ]
        indexes = [
            models.Index(fields=["meeting"], name="idx_participants_meeting_id"),
            models.Index(fields=["user"], name="idx_participants_user_id"),
            models.Index(fields=["joined_at"], name="idx_participants_joined_at"),
            # Counting a meeting's present participants at join (capacity check).
            models.Index(
                fields=["meeting"], condition=Q(left_at__isnull=True), name="idx_participants_present"
            ),
        ]

    def __str__(self) -> str:
        return self.display_name


class MeetingBan(models.Model):
    """Someone the host removed from a meeting: their joins are refused until the host lifts the ban.

    `principal` names who is banned, as the join knows the caller: `user:<uuid>` for a signed-in user, or
    `guest:<client address>` for a guest. A guest has no identity of its own and picks its display name freely,
    so a guest ban holds the address it joined from (every guest behind that address until the host lifts it).
    """

    ban_id = models.UUIDField(verbose_name="ban ID", primary_key=True, default=uuid.uuid4, db_default=RandomUUID())
    # No index of its own: uq_meeting_bans_meeting_principal leads with meeting_id.
    meeting = models.ForeignKey(Meeting, on_delete=models.CASCADE, related_name="bans", db_index=False)
    principal = models.CharField(
        max_length=100, db_comment="user:<user id> or guest:<client address> (personal data for guests)"
    )
    participant_id = models.UUIDField(
        verbose_name="participant ID", db_comment="The participant session the host removed")
    display_name = models.CharField(max_length=255, db_comment="That participant's display name, for the host")
    banned_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+",
        db_column="banned_by_user_id", db_comment="The host who banned; NULL once the user is deleted",
    )
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)

    class Meta:
        db_table = "meeting_bans"
        db_table_comment = "Principals the host removed from a meeting; their joins are refused until the host lifts it"
        constraints = [
            # One ban per principal and meeting; also the index of the join's ban check.
            models.UniqueConstraint(fields=["meeting", "principal"], name="uq_meeting_bans_meeting_principal"),
        ]

    def __str__(self) -> str:
        return f"{self.display_name} banned from {self.meeting_id}"

    def __repr__(self) -> str:
        return f"<MeetingBan {self.pk} {self.meeting_id}>"

    @property
    def kind(self) -> str:
        return self.principal.split(":", 1)[0]

    @property
    def user_id(self) -> str | None:
        kind, _, value = self.principal.partition(":")
        return value if kind == "user" else None


class Recording(models.Model):
    recording_id = models.UUIDField(
        verbose_name="recording ID", primary_key=True, default=uuid.uuid4, db_default=RandomUUID())
    meeting = models.ForeignKey(Meeting, on_delete=models.CASCADE, related_name="recordings")
    started_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True,
        related_name="recordings_started", db_column="started_by_user_id",
    )

    started_at = models.DateTimeField()
    ended_at = models.DateTimeField(null=True, blank=True)
    duration_seconds = models.IntegerField(
        verbose_name="duration (s)", null=True, blank=True, db_comment="Length of the finished recording")
    file_size_bytes = models.BigIntegerField(
        verbose_name="file size (bytes)", null=True, blank=True, db_comment="Size of the stored file")

    storage_path = models.TextField(db_comment="Object path inside storage_bucket")
    storage_bucket = models.CharField(max_length=255, db_comment="Object-storage bucket (RECORDINGS_STORAGE_BUCKET)")

    video_codec = models.CharField(max_length=50, null=True, blank=True)
    audio_codec = models.CharField(max_length=50, null=True, blank=True)
    resolution = models.CharField(max_length=20, null=True, blank=True, db_comment="e.g. 1920x1080")

    status = models.CharField(
        max_length=20, choices=RecordingStatus.choices, default=RecordingStatus.RECORDING, db_default="recording",
        db_comment="recording -> processing -> ready | failed, never backwards",
    )
    error_message = models.TextField(null=True, blank=True, db_comment="Why processing failed (status failed)")

    is_public = models.BooleanField(
        verbose_name="public",
        default=False, db_default=False,
        db_comment="Shared: its link opens it without signing in until share_expires_at",
    )
    share_token_hash = models.CharField(
        max_length=64, null=True, blank=True,
        db_comment="SHA-256 (hex) of the share link's token; the token itself is never stored. NULL: not shared",
    )
    share_expires_at = models.DateTimeField(
        null=True, blank=True,
        db_comment="The share link answers until this time (exclusive). NULL: not shared",
    )

    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)

    class Meta:
        db_table = "recordings"
        # The admin's unshare and rotate actions (superusers, or staff granted it).
        permissions = [("manage_share_recording", "Can unshare recordings and rotate their share links")]
        constraints = [
            # A share is whole (a token hash and an end) or absent; an expired share keeps both until it is
            # unshared or shared afresh, and the public lookup compares share_expires_at.
            models.CheckConstraint(
                condition=Q(is_public=True, share_token_hash__isnull=False, share_expires_at__isnull=False)
                | Q(is_public=False, share_token_hash__isnull=True, share_expires_at__isnull=True),
                name="recordings_share_complete",
            ),
            # The public link's lookup by token hash.
            models.UniqueConstraint(fields=["share_token_hash"], name="uq_recordings_share_token_hash"),
            models.CheckConstraint(condition=Q(status__in=RecordingStatus.values), name="recordings_status_valid"),
            models.CheckConstraint(
                condition=Q(file_size_bytes__isnull=True) | Q(file_size_bytes__gte=0),
                name="recordings_file_size_nonnegative",
            ),
            models.CheckConstraint(
                condition=Q(duration_seconds__isnull=True) | Q(duration_seconds__gte=0),
                name="recordings_duration_nonnegative",
            ),
        ]
        indexes = [
            models.Index(fields=["meeting"], name="idx_recordings_meeting_id"),
            models.Index(fields=["started_by_user"], name="idx_recordings_started_by"),
            models.Index(fields=["status"], name="idx_recordings_status"),
        ]
        triggers = [updated_at_trigger("recordings")]

    def __str__(self) -> str:
        return f"{self.meeting_id} {self.started_at:%Y-%m-%d %H:%M} ({self.status})"

    def __repr__(self) -> str:
        return f"<Recording {self.recording_id} {self.status}>"

    @staticmethod
    def share_token_digest(token: str) -> str:
        """What share_token_hash stores for a link's token: SHA-256, hex. A token is 256 random bits, so a fast
        unsalted hash suffices: nothing can be guessed from it, and the public lookup finds it by index."""
        return hashlib.sha256(token.encode()).hexdigest()

    def share_is_live(self, now: datetime) -> bool:
        """Its link opens it at `now` (shared, and before share_expires_at)."""
        return bool(self.is_public and self.share_expires_at is not None and now < self.share_expires_at)


class MeetingAssignment(models.Model):
    """Which meeting controller runs a meeting in a region. At most one active row per (meeting, region)."""

    id = models.BigAutoField(primary_key=True)
    meeting = models.ForeignKey(Meeting, on_delete=models.CASCADE, related_name="assignments")
    meeting_controller = models.ForeignKey(
        "controllers.MeetingController", on_delete=models.CASCADE, related_name="assignments",
        db_comment="The assigned MC; its assignment history goes with it when an operator deletes it",
    )
    region = models.CharField(max_length=50, db_comment="Region the meeting is served from by this MC")
    assigned_at = models.DateTimeField(
        default=timezone.now, db_default=Now(), db_comment="Database time of the assignment"
    )
    assigned_by_gc_id = models.CharField(
        verbose_name="assigned by GC ID",
        max_length=255, db_comment="Id of the Global Controller process that made the assignment"
    )
    ended_at = models.DateTimeField(null=True, blank=True, db_comment="NULL while the assignment is active")
    end_reason = models.CharField(
        max_length=50, null=True, blank=True,
        db_comment="Why it ended: meeting_ended, controller_unhealthy, drain_deadline, drain_move, reassigned",
    )
    reserved_participants = models.IntegerField(
        default=0, db_default=0,
        db_comment="Participants this assignment reserves on its MC (a large meeting's expected size, 0 for "
        "others); given back to meeting_controllers.reserved_participants when it ends",
    )
    pending_until = models.DateTimeField(
        null=True, blank=True,
        db_comment="Set while the GC waits for the MC to accept the meeting (AssignMeetingWithMh); NULL once "
        "accepted, and for assignments made without asking the MC. Still set after this time: abandoned",
    )
    media_handler_ids = ArrayField(
        models.CharField(max_length=255), verbose_name="media handler IDs", null=True, blank=True,
        db_comment="The media handlers chosen for the meeting and sent to its MC, in the order sent",
    )

    class Meta:
        db_table = "meeting_assignments"
        constraints = [
            # The race guard of the join flow: concurrent joins cannot both hold an active assignment.
            models.UniqueConstraint(
                fields=["meeting", "region"], condition=Q(ended_at__isnull=True),
                name="uq_meeting_assignments_active",
            ),
            models.CheckConstraint(
                condition=Q(ended_at__isnull=True) | Q(ended_at__gte=models.F("assigned_at")),
                name="meeting_assignments_ended_after_assigned",
            ),
            models.CheckConstraint(
                condition=Q(reserved_participants__gte=0), name="meeting_assignments_reserved_participants_nonnegative"
            ),
        ]
        indexes = [
            # Assignment cleanup and drain: active assignments of one MC.
            models.Index(
                fields=["meeting_controller"], condition=Q(ended_at__isnull=True),
                name="idx_assignments_active_by_mc",
            ),
            models.Index(fields=["meeting_controller", "assigned_at"], name="idx_assignments_mc_assigned"),
            # Hard-delete of assignments ended long ago.
            models.Index(fields=["ended_at"], condition=Q(ended_at__isnull=False), name="idx_assignments_ended"),
        ]

    def __str__(self) -> str:
        return f"{self.meeting_id} in {self.region} -> {self.meeting_controller_id}"

    def __repr__(self) -> str:
        return f"<MeetingAssignment {self.meeting_id} {self.region} -> {self.meeting_controller_id}>"
