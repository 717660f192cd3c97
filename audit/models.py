"""What happened and what must be announced: the audit trail, the transactional outbox, and the
idempotency ledger for POST requests."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now
from django.utils import timezone

from darktower.db import PgIndex


class ActorType(models.TextChoices):
    USER = "user"
    SYSTEM = "system"
    API = "api"
    SERVICE = "service"


class AuditResult(models.TextChoices):
    SUCCESS = "success"
    FAILURE = "failure"


class AuditLog(models.Model):
    """One audited event. The table is partitioned by month on created_at (see migration 0001).

    The database primary key is (id, created_at), as partitioning requires; Django is told `id` alone
    is the key, which holds because ids come from one sequence. Rows are never updated or deleted
    one by one: retention drops whole partitions. The database refuses UPDATE, DELETE and TRUNCATE (audit migration
    0006), except the foreign key's own ON DELETE SET NULL of actor_user_id.
    """

    id = models.BigAutoField(primary_key=True)
    event_type = models.CharField(max_length=50, db_comment="e.g. user_login, meeting_created, controller_registered")
    # DO_NOTHING: the database's ON DELETE SET NULL clears the column when a user is deleted. Django's SET_NULL
    # would issue that UPDATE itself, at the top level, which the append-only trigger refuses.
    actor_user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.DO_NOTHING, null=True, blank=True,
        related_name="+", db_constraint=False, db_column="actor_user_id",
        db_comment="References users(user_id) ON DELETE SET NULL (constraint created in SQL)",
    )
    actor_type = models.CharField(
        max_length=50, choices=ActorType.choices,
        db_comment="user, system, api or service (an MC/MH with a service token)",
    )
    target_type = models.CharField(max_length=50, null=True, blank=True, db_comment="meeting, user, controller, ...")
    target_id = models.CharField(
        verbose_name="target ID",
        max_length=255, null=True, blank=True, db_comment="Primary key of the target as text (UUIDs, controller ids)"
    )
    action = models.CharField(
        max_length=100, db_comment="The verb within event_type, e.g. create, drain, mark_unhealthy"
    )
    result = models.CharField(max_length=20, choices=AuditResult.choices, db_comment="success or failure")
    error_message = models.TextField(null=True, blank=True)
    ip_address = models.GenericIPAddressField(verbose_name="IP address", null=True, blank=True)
    user_agent = models.TextField(null=True, blank=True)
    metadata = models.JSONField(
        default=dict, null=True, blank=True, db_comment="Event details; never tokens, secrets or email addresses"
    )
    created_at = models.DateTimeField(
        default=timezone.now, db_default=Now(), db_comment="Partition key (monthly partitions)"
    )

    class Meta:
        db_table = "audit_logs"
        managed = False  # created by RunSQL: Django cannot declare a partitioned table
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.event_type} {self.target_type}:{self.target_id}"


class OutboxEvent(models.Model):
    """An event written in the same transaction as the change it announces; a relay publishes it."""

    id = models.BigAutoField(primary_key=True)
    aggregate_type = models.CharField(max_length=50, db_comment="meeting, controller, media_handler, ...")
    aggregate_id = models.CharField(
        verbose_name="aggregate ID", max_length=255, db_comment="Primary key of the aggregate as text")
    event_type = models.CharField(max_length=100, db_comment="e.g. meeting_assigned, controller_unhealthy")
    payload = models.JSONField(default=dict, db_default={}, db_comment="What the handlers publish")
    created_at = models.DateTimeField(default=timezone.now, db_default=Now())
    processed_at = models.DateTimeField(null=True, blank=True, db_comment="Set once the relay has published it")
    attempts = models.IntegerField(
        default=0, db_default=0, db_comment="Delivery attempts so far; the row turns poison at OUTBOX_MAX_ATTEMPTS"
    )
    last_error = models.TextField(null=True, blank=True, db_comment="The last delivery error, short")
    last_attempt_at = models.DateTimeField(null=True, blank=True)
    next_attempt_at = models.DateTimeField(
        null=True, blank=True, db_comment="Backoff: the relay skips the row until then"
    )
    failed_at = models.DateTimeField(
        null=True, blank=True, db_comment="Set when attempts reach the limit; the relay stops retrying (poison row)"
    )

    class Meta:
        db_table = "outbox_events"
        # The admin's retry action (operator group, accounts migration 0003).
        permissions = [("retry_outboxevent", "Can retry unpublished outbox events")]
        constraints = [
            models.CheckConstraint(condition=Q(attempts__gte=0), name="outbox_events_attempts_nonnegative"),
        ]
        indexes = [
            # The relay's claim query: pending rows in id order.
            PgIndex(
                fields=["id"], condition=Q(processed_at__isnull=True, failed_at__isnull=True),
                name="idx_outbox_events_pending",
            ),
            # Retention of processed rows.
            PgIndex(
                fields=["processed_at"], condition=Q(processed_at__isnull=False), name="idx_outbox_events_processed"
            ),
            models.Index(fields=["aggregate_type", "aggregate_id"], name="idx_outbox_events_aggregate"),
        ]

    def __str__(self) -> str:
        return f"{self.event_type} {self.aggregate_type}:{self.aggregate_id}"


class IdempotencyKey(models.Model):
    """The first response to a POST carrying an Idempotency-Key, replayed for retries of the same request."""

    class State(models.TextChoices):
        IN_PROGRESS = "in_progress"
        COMPLETED = "completed"

    id = models.BigAutoField(primary_key=True)
    key = models.CharField(max_length=255, db_comment="Client-chosen Idempotency-Key header value")
    principal = models.CharField(
        max_length=100,
        db_comment="Who sent it: user:<uuid>, apikey:<uuid>, ip:<address> or guest:<address>:<keyed hash of the name>; "
        "keys are per principal",
    )
    request_method = models.CharField(max_length=10)
    request_path = models.CharField(max_length=255)
    request_hash = models.CharField(max_length=64, db_comment="SHA-256 of method, path and body")
    state = models.CharField(
        max_length=20, choices=State.choices, default=State.IN_PROGRESS,
        db_comment="in_progress while the first request runs (a duplicate answers 409), then completed",
    )
    response_status = models.IntegerField(null=True, blank=True, db_comment="HTTP status of the first response")
    response_body = models.JSONField(
        null=True, blank=True, db_comment="Body of the first response, replayed; secrets are not stored"
    )
    created_at = models.DateTimeField(default=timezone.now, db_default=Now())
    expires_at = models.DateTimeField(db_comment="Replayable until then (24 hours by default)")

    class Meta:
        db_table = "idempotency_keys"
        constraints = [
            models.UniqueConstraint(fields=["principal", "key"], name="uq_idempotency_keys_principal_key"),
            models.CheckConstraint(
                condition=Q(state__in=["in_progress", "completed"]), name="idempotency_keys_state_valid"
            ),
            models.CheckConstraint(
                condition=Q(state="in_progress") | Q(response_status__isnull=False),
                name="idempotency_keys_completed_has_response",
            ),
        ]
        indexes = [models.Index(fields=["expires_at"], name="idx_idempotency_expires")]

    def __str__(self) -> str:
        return f"{self.request_method} {self.request_path} ({self.state})"

    def __repr__(self) -> str:
        return f"<IdempotencyKey {self.principal} {self.state}>"
