"""The fleet: meeting controllers (MCs) and media handlers (MHs) that register over gRPC.

`meeting_controllers` and `media_handlers` hold one member each (controllers.members), with the registration
columns the gRPC contract needs and the health columns of controllers.health_rules.
"""

from __future__ import annotations

import pgtrigger
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


def owner_field() -> models.CharField:
    """The client id of the service credential a member belongs to (controllers.services.ownership; the migration
    that adds it says who claims a NULL).

    A plain column, not a foreign key to service_credentials: it is compared with the subject of the token a
    member presents, and what a foreign key's ON DELETE could do is worse than nothing. Credentials are revoked
    (is_active false), never deleted (the admin offers no delete); a revoked or vanished credential keeps its
    members under a client id that no token will carry again, so no other credential can take them over until an
    operator moves them. SET NULL would hand them to whoever claims them first, and CASCADE would delete a fleet.
    No index: no hot query filters by owner (a beat checks it on the row it updates, or from memory), and every
    beat updates its row outside HOT, which would cost an index insert per beat.
    """
    return models.CharField(
        verbose_name="owner's client ID", max_length=64, null=True, blank=True,
        db_comment="Client id of the service credential that registered this member (its owner); only it may "
        "re-register it, beat for it and end its meetings. NULL: not claimed yet (rows older than ownership)",
    )


class LegacyHealth(models.TextChoices):
    """The three health states before `pending` and `draining`, kept for the first migration's history."""

    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


class HealthStatus(models.TextChoices):
    """A member's health (the state machine is controllers.health_rules): pending (registered, no good heartbeat
    yet) -> healthy / degraded; unhealthy when stale; draining takes no new meetings."""

    PENDING = "pending"
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    DRAINING = "draining"


# States that receive new meetings; the partial index idx_meeting_controllers_available covers exactly these.
AVAILABLE_STATES = (HealthStatus.HEALTHY, HealthStatus.DEGRADED)
# States whose media handlers receive new meetings: a degraded MH is left out (an MC has no degraded fallback for it).
HANDLER_AVAILABLE_STATES = (HealthStatus.HEALTHY,)
# States the stale sweep judges; draining controllers are never swept.
LIVE_STATES = (HealthStatus.PENDING, HealthStatus.HEALTHY, HealthStatus.DEGRADED)


def health_bookkeeping_trigger(table: str, *, drain_columns: bool) -> pgtrigger.Trigger:
    """BEFORE UPDATE of health_status: stamp health_changed_at, start or clear the hold-down, and (controllers)
    clear the drain columns on leaving `draining`.

    In the database, not in each service: registration, heartbeats, the sweep, operators and the drain job all
    change health_status, raw SQL included, and none of them can forget this bookkeeping. The WHEN clause keeps
    the hot heartbeat UPDATE (status unchanged) from calling the function at all.
    """
    drain = (
        "IF NEW.health_status <> 'draining' THEN NEW.drain_deadline = NULL; NEW.drain_target_controller_id = NULL; "
        "END IF; "
        if drain_columns
        else ""
    )
    return pgtrigger.Trigger(
        name=f"{table}_health_bookkeeping",
        when=pgtrigger.Before,
        operation=pgtrigger.Update,
        condition=pgtrigger.Q(old__health_status__df=pgtrigger.F("new__health_status")),
        func=(
            "NEW.health_changed_at = now(); NEW.good_heartbeats = 0; "
            "IF NEW.health_status = 'unhealthy' THEN NEW.unhealthy_since = now(); "
            "ELSE NEW.unhealthy_since = NULL; END IF; "
            f"{drain}RETURN NEW;"
        ),
    )


class ControllerQuerySet(models.QuerySet["MeetingController"]):
    def available_in(self, region: str) -> ControllerQuerySet:
        """Candidates for new meetings in a region (served by idx_meeting_controllers_available)."""
        return self.filter(region=region, health_status__in=AVAILABLE_STATES)


class MeetingController(models.Model):
    controller_id = models.CharField(verbose_name="controller ID", max_length=255, primary_key=True)
    region = models.CharField(max_length=50)
    endpoint = models.TextField(
        verbose_name="endpoint (legacy)", db_comment="Legacy endpoint column kept for compatibility; use grpc_endpoint")
    grpc_endpoint = models.CharField(
        verbose_name="gRPC endpoint",
        max_length=255, db_comment="gRPC endpoint the GC and other services use to reach this MC"
    )
    webtransport_endpoint = models.CharField(
        verbose_name="WebTransport endpoint",
        max_length=255, null=True, blank=True,
        db_comment="WebTransport endpoint for client connections; NULL until the MC has one",
    )

    max_meetings = models.IntegerField(
        db_comment="Meetings this MC accepts (RegisterMC, heartbeats); placement never exceeds it"
    )
    current_meetings = models.IntegerField(
        default=0, db_default=0,
        db_comment="Meetings the MC reported at its last heartbeat (see assigned_since_heartbeat)",
    )
    max_participants = models.IntegerField(db_comment="Participants this MC accepts across its meetings")
    current_participants = models.IntegerField(
        default=0, db_default=0, db_comment="Participants the MC reported at its last heartbeat"
    )
    cpu_usage_percent = models.FloatField(
        verbose_name="CPU usage (%)", null=True, blank=True, db_comment="From the last comprehensive heartbeat")
    memory_usage_percent = models.FloatField(
        verbose_name="memory usage (%)",
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

    health_changed_at = models.DateTimeField(
        default=timezone.now, db_default=Now(),
        db_comment="Database time of the last health_status change (set by trigger)",
    )
    unhealthy_since = models.DateTimeField(
        null=True, blank=True,
        db_comment="Hold-down start: when marked unhealthy, restarted when heartbeats stop again; NULL unless "
        "unhealthy (trigger)",
    )
    good_heartbeats = models.SmallIntegerField(
        default=0, db_default=0,
        db_comment="Consecutive good heartbeats since marked unhealthy; recovery needs UNHEALTHY_RECOVERY_HEARTBEATS",
    )
    drain_deadline = models.DateTimeField(
        null=True, blank=True,
        db_comment="Draining: remaining assignments are ended or moved at this time; NULL when not draining or "
        "self-reported without one",
    )
    drain_target_controller_id = models.CharField(
        verbose_name="drain target controller ID",
        max_length=255, null=True, blank=True,
        db_comment="Draining: MC that takes the remaining meetings at the deadline; NULL ends them instead",
    )
    assigned_since_heartbeat = models.IntegerField(
        default=0, db_default=0,
        db_comment="In-flight accounting: assignments made since the last heartbeat; heartbeats reset it",
    )
    reserved_participants = models.IntegerField(
        default=0, db_default=0,
        db_comment="Participants reserved by the active assignments of large meetings (expected size); placement "
        "of a large meeting needs current_participants + this + its own size <= max_participants",
    )
    hold_down_until = models.DateTimeField(
        null=True, blank=True,
        db_comment="Pending after re-registering inside the hold-down: no promotion before this time, and only "
        "after UNHEALTHY_RECOVERY_HEARTBEATS good heartbeats; NULL when not held",
    )
    assignments_window_start = models.DateTimeField(
        null=True, blank=True, db_comment="Start of the minute counted by assignments_in_window"
    )
    assignments_in_window = models.IntegerField(
        default=0, db_default=0,
        db_comment="Assignments since assignments_window_start (PLACEMENT_MAX_ASSIGNMENTS_PER_MINUTE cap)",
    )

    owner_client_id = owner_field()

    version = models.CharField(max_length=50, null=True, blank=True, db_comment="Software version the MC runs")
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(
        default=timezone.now, db_default=Now(), editable=False,
        db_comment="Bumped by trigger on every UPDATE, raw SQL included",
    )
    metadata = models.JSONField(default=dict, db_default={}, blank=True, null=True)

    objects = ControllerQuerySet.as_manager()

    class Meta:
        db_table = "meeting_controllers"
        # The operators' admin actions (operator group, accounts migration 0003); undrain goes with drain.
        permissions = [
            ("drain_meetingcontroller", "Can drain and undrain meeting controllers"),
            ("mark_unhealthy_meetingcontroller", "Can mark meeting controllers unhealthy"),
            ("end_assignments_meetingcontroller", "Can end a meeting controller's active assignments"),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(health_status__in=HealthStatus.values), name="valid_health_status"),
            *percent_checks("meeting_controllers", ["cpu_usage_percent", "memory_usage_percent"]),
            models.CheckConstraint(
                condition=Q(good_heartbeats__gte=0), name="meeting_controllers_good_heartbeats_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(assigned_since_heartbeat__gte=0),
                name="meeting_controllers_assigned_since_heartbeat_nonnegative",
            ),
            models.CheckConstraint(
                condition=Q(assignments_in_window__gte=0), name="meeting_controllers_assignments_in_window_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(reserved_participants__gte=0),
                name="meeting_controllers_reserved_participants_nonnegative",
            ),
            models.CheckConstraint(
                condition=Q(unhealthy_since__isnull=True) | Q(health_status="unhealthy"),
                name="meeting_controllers_unhealthy_since_only_unhealthy",
            ),
            # The trigger clears both on leaving `draining`; a target without a deadline would never be used.
            models.CheckConstraint(
                condition=Q(health_status="draining")
                | Q(drain_deadline__isnull=True, drain_target_controller_id__isnull=True),
                name="meeting_controllers_drain_only_draining",
            ),
            models.CheckConstraint(
                condition=Q(drain_target_controller_id__isnull=True)
                | (Q(drain_deadline__isnull=False) & ~Q(drain_target_controller_id=models.F("controller_id"))),
                name="meeting_controllers_drain_target_valid",
            ),
        ]
        indexes = [
            models.Index(fields=["region"], name="idx_controllers_region"),
            models.Index(fields=["health_status"], name="idx_controllers_health"),
            models.Index(fields=["last_heartbeat_at"], name="idx_controllers_heartbeat"),
            # Placement: candidates in a region that accept new meetings.
            PgIndex(
                fields=["region", "health_status"],
                condition=Q(health_status__in=["healthy", "degraded"]),
                name="idx_meeting_controllers_available",
            ),
            # The drain job: draining MCs by deadline (a handful of rows, never touched by heartbeats).
            PgIndex(
                fields=["drain_deadline"], condition=Q(drain_deadline__isnull=False),
                name="idx_meeting_controllers_drain_deadline",
            ),
            # The sweep's hold-down restart: unhealthy MCs that began recovering and went silent again.
            PgIndex(
                fields=["last_heartbeat_at"], condition=Q(health_status="unhealthy", good_heartbeats__gt=0),
                name="idx_meeting_controllers_recovering",
            ),
        ]
        triggers = [
            updated_at_trigger("meeting_controllers", skip_when_now=True),
            health_bookkeeping_trigger("meeting_controllers", drain_columns=True),
        ]

    def __str__(self) -> str:
        return self.controller_id

    @property
    def effective_meetings(self) -> int:
        """The load placement judges: the last report plus the assignments made since (in-flight accounting)."""
        return self.current_meetings + self.assigned_since_heartbeat

    @property
    def load_ratio(self) -> float:
        return self.effective_meetings / self.max_meetings if self.max_meetings else 1.0


class MediaHandler(models.Model):
    handler_id = models.CharField(verbose_name="handler ID", max_length=255, primary_key=True)
    region = models.CharField(max_length=50)
    endpoint = models.TextField(
        verbose_name="endpoint (legacy)", db_comment="Legacy endpoint column kept for compatibility; use grpc_endpoint")
    grpc_endpoint = models.CharField(
        verbose_name="gRPC endpoint",
        max_length=255, null=True, blank=True, db_comment="gRPC endpoint for MC-to-MH calls (e.g. grpc://host:port)"
    )
    webtransport_endpoint = models.CharField(
        verbose_name="WebTransport endpoint",
        max_length=255, null=True, blank=True, db_comment="WebTransport endpoint for client media connections"
    )

    max_streams = models.IntegerField(db_comment="Media streams this handler accepts (from RegisterMH)")
    current_streams = models.IntegerField(default=0, db_default=0, db_comment="Streams at the last load report")
    max_bitrate_mbps = models.IntegerField(
        verbose_name="max bitrate (Mbit/s)", db_comment="Egress bandwidth ceiling, megabits per second")
    current_bitrate_mbps = models.IntegerField(
        verbose_name="current bitrate (Mbit/s)", default=0, db_default=0,
        db_comment="Egress at the last report, Mbit/s")
    cpu_usage_percent = models.FloatField(
        verbose_name="CPU usage (%)", null=True, blank=True, db_comment="0..100, from the last load report")
    memory_usage_percent = models.FloatField(
        verbose_name="memory usage (%)", null=True, blank=True, db_comment="0..100, from the last load report")
    bandwidth_usage_percent = models.FloatField(
        verbose_name="bandwidth usage (%)",
        null=True, blank=True, db_comment="0..100 of max_bitrate_mbps, from the last load report"
    )

    health_status = models.CharField(
        max_length=20, choices=HealthStatus.choices, default=HealthStatus.PENDING, db_default="pending",
        db_comment="pending until the first good report; healthy, degraded, unhealthy (stale or reported) or draining",
    )
    last_heartbeat_at = models.DateTimeField(
        default=timezone.now, db_default=Now(), db_comment="Database time of the last load report received"
    )

    health_changed_at = models.DateTimeField(
        default=timezone.now, db_default=Now(),
        db_comment="Database time of the last health_status change (set by trigger)",
    )
    unhealthy_since = models.DateTimeField(
        null=True, blank=True,
        db_comment="Hold-down start: when marked unhealthy, restarted when reports stop again; NULL unless "
        "unhealthy (trigger)",
    )
    good_heartbeats = models.SmallIntegerField(
        default=0, db_default=0,
        db_comment="Consecutive good load reports since marked unhealthy; recovery needs UNHEALTHY_RECOVERY_HEARTBEATS",
    )
    hold_down_until = models.DateTimeField(
        null=True, blank=True,
        db_comment="Pending after re-registering inside the hold-down: no promotion before this time, and only "
        "after UNHEALTHY_RECOVERY_HEARTBEATS good load reports; NULL when not held",
    )

    supports_transcoding = models.BooleanField(
        default=True, db_default=True, db_comment="Can re-encode streams between codecs"
    )
    supports_mixing = models.BooleanField(default=True, db_default=True, db_comment="Can mix audio streams")
    supported_codecs = ArrayField(
        models.TextField(), null=True, blank=True, default=default_codecs, db_default=["VP9", "AV1", "H264", "Opus"],
        db_comment="Codec names this handler forwards or transcodes",
    )
    owner_client_id = owner_field()

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
            models.CheckConstraint(
                condition=Q(good_heartbeats__gte=0), name="media_handlers_good_heartbeats_nonnegative"
            ),
            models.CheckConstraint(
                condition=Q(unhealthy_since__isnull=True) | Q(health_status="unhealthy"),
                name="media_handlers_unhealthy_since_only_unhealthy",
            ),
        ]
        indexes = [
            models.Index(fields=["region"], name="idx_handlers_region"),
            models.Index(fields=["health_status"], name="idx_handlers_health"),
            # The sweep's hold-down restart: unhealthy MHs that began recovering and went silent again.
            PgIndex(
                fields=["last_heartbeat_at"], condition=Q(health_status="unhealthy", good_heartbeats__gt=0),
                name="idx_media_handlers_recovering",
            ),
        ]
        triggers = [
            updated_at_trigger("media_handlers", skip_when_now=True),
            health_bookkeeping_trigger("media_handlers", drain_columns=False),
        ]

    def __str__(self) -> str:
        return self.handler_id


class ComponentType(models.TextChoices):
    CONTROLLER = "controller"
    HANDLER = "handler"


class TransitionReason(models.TextChoices):
    """Why a controller's or handler's health changed (or, for sweep-gap and disruption-guard, why it was held)."""

    REGISTERED = "registered"
    HEARTBEAT = "heartbeat"
    STALE = "stale"
    OPERATOR = "operator"
    DISRUPTION_GUARD = "disruption-guard"
    HOLD_DOWN_CLEARED = "hold-down-cleared"
    SWEEP_GAP = "sweep-gap"
    DRAIN_DEADLINE = "drain-deadline"


# Reasons that record a decision not to change the state (from_status = to_status).
HOLD_REASONS = (TransitionReason.SWEEP_GAP, TransitionReason.DISRUPTION_GUARD)


class HealthTransition(models.Model):
    """One change of a controller's or handler's health state, written in the statement or transaction that
    made it (controllers.services.transitions).

    No foreign key to meeting_controllers / media_handlers, on purpose: the history of a controller an
    operator deleted is exactly what a post-mortem reads, so rows outlive their controller and are removed
    only by retention (RETENTION_HEALTH_TRANSITIONS_DAYS). For the same reason actor_user_id is a plain
    column, not a key to users.
    """

    id = models.BigAutoField(primary_key=True)
    component_type = models.CharField(max_length=20, choices=ComponentType.choices, db_comment="controller or handler")
    component_id = models.TextField(
        verbose_name="component ID", db_comment="controller_id or handler_id (no FK: history outlives the row)")
    region = models.CharField(max_length=50, db_comment="Region of the component at the time of the transition")
    from_status = models.CharField(
        max_length=20, choices=HealthStatus.choices, null=True, blank=True,
        db_comment="State before; NULL for a first registration",
    )
    to_status = models.CharField(max_length=20, choices=HealthStatus.choices, db_comment="State after")
    reason = models.CharField(max_length=30, choices=TransitionReason.choices, db_comment="Why (TransitionReason)")
    actor_type = models.CharField(
        max_length=20, db_comment="system (sweep, heartbeats, jobs), user (operator), service (the MC itself)"
    )
    actor_user_id = models.UUIDField(
        verbose_name="actor's user ID",
        null=True, blank=True, db_comment="Operator who made the change; plain column, no FK (history outlives users)"
    )
    metadata = models.JSONField(
        default=dict, db_default={}, blank=True, db_comment="Reason details: threshold, gap length, deadline, ..."
    )
    created_at = models.DateTimeField(
        default=timezone.now, db_default=Now(), db_comment="Database time of the transition"
    )

    class Meta:
        db_table = "controller_health_transitions"
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(component_type__in=ComponentType.values), name="health_transitions_component_type_valid"
            ),
            models.CheckConstraint(
                condition=Q(from_status__isnull=True) | Q(from_status__in=HealthStatus.values),
                name="health_transitions_from_status_valid",
            ),
            models.CheckConstraint(
                condition=Q(to_status__in=HealthStatus.values), name="health_transitions_to_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(reason__in=TransitionReason.values), name="health_transitions_reason_valid"
            ),
            models.CheckConstraint(
                condition=Q(actor_type__in=["user", "system", "api", "service"]),
                name="health_transitions_actor_type_valid",
            ),
            # A row either changes the state or records a hold (sweep-gap, disruption-guard), never a no-op.
            models.CheckConstraint(
                condition=~Q(from_status=models.F("to_status")) | Q(from_status__isnull=True)
                | Q(reason__in=HOLD_REASONS),
                name="health_transitions_changes_state",
            ),
        ]
        indexes = [
            # The admin timeline: recent transitions of one controller, newest first.
            PgIndex(
                models.F("component_type"), models.F("component_id"), models.F("created_at").desc(),
                name="idx_health_transitions_component",
            ),
            # The dashboard's last hour per region, and retention's created_at < cutoff.
            PgIndex(fields=["created_at"], name="idx_health_transitions_created"),
            # One region's recent transitions.
            PgIndex(fields=["region", "created_at"], name="idx_health_transitions_region"),
        ]

    def __str__(self) -> str:
        return f"{self.component_type} {self.component_id}: {self.from_status} -> {self.to_status} ({self.reason})"


class SweepState(models.Model):
    """The stale sweep's memory between runs: when it last ran, and when it last granted every live member a
    fresh grace period after a gap.

    A database row, not Redis or django-celery-beat's last_run_at: it must survive restarts of every process,
    commit with the sweep it describes (a dry run rolls it back), and say when the sweep *ran*, which the beat's
    last_run_at does not (the beat stamps it when it sends the task, also while no worker is consuming).
    """

    id = models.SmallIntegerField(primary_key=True, default=1, db_comment="Always 1: a one-row table")
    last_run_at = models.DateTimeField(db_comment="Database time of the last committed (non-dry-run) sweep")
    grace_from = models.DateTimeField(
        null=True, blank=True,
        db_comment="Start of the grace granted after a sweep gap: staleness counts from max(last heartbeat, this)",
    )

    class Meta:
        db_table = "controller_sweep_state"
        constraints = [models.CheckConstraint(condition=Q(id=1), name="controller_sweep_state_one_row")]

    def __str__(self) -> str:
        return f"sweep last ran {self.last_run_at:%Y-%m-%d %H:%M:%S}"
