"""The fleet: meeting controllers (MCs) and media handlers (MHs) that register over gRPC.

`meeting_controllers` follows seed 002 table 6 as evolved by seed 000 (MC registration);
`media_handlers` follows seed 002 table 7 with the registration columns the gRPC contract needs.
"""

from __future__ import annotations

from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import updated_at_trigger
from darktower.db import PgIndex


def default_codecs() -> list[str]:
    return ["VP9", "AV1", "H264", "Opus"]


def percent_checks(table: str, columns: list[str]) -> list[models.CheckConstraint]:
    return [
        models.CheckConstraint(
            condition=Q(**{f"{column}__isnull": True}) | Q(**{f"{column}__gte": 0, f"{column}__lte": 100}),
            name=f"{table}_{column}_range",
        )
        for column in columns
    ]


class LegacyHealth(models.TextChoices):
    """The three states of seed 002, kept for the first migration's history."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class HealthStatus(models.TextChoices):
    """Seed 000: pending (registered, no good heartbeat yet) -> healthy / degraded; unhealthy when stale;
    draining takes no new meetings."""

    PENDING = "pending"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"


# States that receive new meetings; the partial index idx_meeting_controllers_available covers exactly these.
AVAILABLE_STATES = (HealthStatus.HEALTHY, HealthStatus.DEGRADED)
# States the stale sweep judges; draining controllers are never swept.
LIVE_STATES = (HealthStatus.PENDING, HealthStatus.HEALTHY, HealthStatus.DEGRADED)


class ControllerQuerySet(models.QuerySet["MeetingController"]):
    def available_in(self, region: str) -> ControllerQuerySet:
        """Candidates for new meetings in a region (served by idx_meeting_controllers_available)."""
        return self.filter(region=region, health_status__in=AVAILABLE_STATES)


class MeetingController(models.Model):
    controller_id = models.CharField(max_length=255, primary_key=True)
    region = models.CharField(max_length=50)
    endpoint = models.TextField(db_comment="Legacy endpoint column kept for compatibility; use grpc_endpoint")
    grpc_endpoint = models.CharField(
        max_length=255, db_comment="gRPC endpoint the GC and other services use to reach this MC"
    )
    webtransport_endpoint = models.CharField(
        max_length=255, null=True, blank=True,
        db_comment="WebTransport endpoint for client connections; NULL until the MC has one",
    )

    max_meetings = models.IntegerField()
    current_meetings = models.IntegerField(default=0, db_default=0)
    max_participants = models.IntegerField()
    current_participants = models.IntegerField(default=0, db_default=0)
    cpu_usage_percent = models.FloatField(null=True, blank=True, db_comment="From the last comprehensive heartbeat")
    memory_usage_percent = models.FloatField(
        null=True, blank=True, db_comment="From the last comprehensive heartbeat"
    )

    health_status = models.CharField(
        max_length=20, choices=HealthStatus.choices, default=HealthStatus.PENDING, db_default="pending",
        db_comment="pending: registered, not yet verified; healthy; degraded: operational with issues; "
        "unhealthy: not responding to heartbeats; draining: no new meetings, graceful shutdown",
    )
    last_heartbeat_at = models.DateTimeField(
        default=timezone.now, db_default=Now(), db_comment="Database time of the last heartbeat received"
    )

    version = models.CharField(max_length=50, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(
        default=timezone.now, db_default=Now(), editable=False,
        db_comment="Bumped by trigger on every UPDATE, raw SQL included",
    )
    metadata = models.JSONField(default=dict, db_default={}, blank=True, null=True)

    objects = ControllerQuerySet.as_manager()

    class Meta:
        db_table = "meeting_controllers"
        constraints = [
            models.CheckConstraint(condition=Q(health_status__in=HealthStatus.values), name="valid_health_status"),
            *percent_checks("meeting_controllers", ["cpu_usage_percent", "memory_usage_percent"]),
        ]
        indexes = [
            models.Index(fields=["region"], name="idx_controllers_region"),
            models.Index(fields=["health_status"], name="idx_controllers_health"),
            models.Index(fields=["last_heartbeat_at"], name="idx_controllers_heartbeat"),
            # Placement: candidates in a region that accept new meetings (seed 000).
            PgIndex(
                fields=["region", "health_status"],
                condition=Q(health_status__in=["healthy", "degraded"]),
                name="idx_meeting_controllers_available",
            ),
        ]
        triggers = [updated_at_trigger("meeting_controllers")]

    def __str__(self) -> str:
        return self.controller_id

    @property
    def load_ratio(self) -> float:
        return self.current_meetings / self.max_meetings if self.max_meetings else 1.0


class MediaHandler(models.Model):
    handler_id = models.CharField(max_length=255, primary_key=True)
    region = models.CharField(max_length=50)
    endpoint = models.TextField(db_comment="Legacy endpoint column kept for compatibility; use grpc_endpoint")
    grpc_endpoint = models.CharField(max_length=255, null=True, blank=True)
    webtransport_endpoint = models.CharField(max_length=255, null=True, blank=True)

    max_streams = models.IntegerField()
    current_streams = models.IntegerField(default=0, db_default=0)
    max_bitrate_mbps = models.IntegerField()
    current_bitrate_mbps = models.IntegerField(default=0, db_default=0)
    cpu_usage_percent = models.FloatField(null=True, blank=True)
    memory_usage_percent = models.FloatField(null=True, blank=True)
    bandwidth_usage_percent = models.FloatField(null=True, blank=True)

    health_status = models.CharField(
        max_length=20, choices=HealthStatus.choices, default=HealthStatus.PENDING, db_default="pending"
    )
    last_heartbeat_at = models.DateTimeField(
        default=timezone.now, db_default=Now(), db_comment="Database time of the last load report received"
    )

    supports_transcoding = models.BooleanField(default=True, db_default=True)
    supports_mixing = models.BooleanField(default=True, db_default=True)
    supported_codecs = ArrayField(
        models.TextField(), null=True, blank=True, default=default_codecs, db_default=["VP9", "AV1", "H264", "Opus"]
    )

    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    metadata = models.JSONField(default=dict, db_default={}, blank=True, null=True)

    class Meta:
        db_table = "media_handlers"
        constraints = [
            models.CheckConstraint(
                condition=Q(health_status__in=HealthStatus.values), name="media_handlers_health_status_valid"
            ),
            *percent_checks("media_handlers", ["cpu_usage_percent", "memory_usage_percent", "bandwidth_usage_percent"]),
        ]
        indexes = [
            models.Index(fields=["region"], name="idx_handlers_region"),
            models.Index(fields=["health_status"], name="idx_handlers_health"),
        ]
        triggers = [updated_at_trigger("media_handlers")]

    def __str__(self) -> str:
        return self.handler_id
