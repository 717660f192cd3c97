"""The audit trail (read-only for everyone, superusers included), the transactional outbox, and Celery beat's
periodic tasks (django-celery-beat's admin, its actions limited to those who may change tasks).

audit_logs is partitioned by month and holds millions of rows: the list never counts it (it reads at most a few
pages ahead of the one shown, darktower.admin_tools.LookaheadPaginator), filter choices come from indexes (loose
index scans), and ordering follows idx_audit_created_at.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

from django.contrib import admin
from django.contrib.auth import get_user_model
from django.db.models import QuerySet, Subquery
from django.db.models.expressions import RawSQL
from django.http import HttpRequest, HttpResponse
from django_celery_beat.admin import PeriodicTaskAdmin as CeleryBeatPeriodicTaskAdmin
from django_celery_beat.models import PeriodicTask

from audit.models import ActorType, AuditLog, OutboxEvent
from audit.services import outbox_events_retry
from darktower.admin_tools import (
    IndexedDistinctFilter,
    TextInputFilter,
    UncountedListMixin,
    confirmed_action,
    distinct_values_sql,
)


class EventTypeFilter(IndexedDistinctFilter):
    title = "event type"
    parameter_name = "event_type"
    table = "audit_logs"
    column = "event_type"  # idx_audit_event_type


class TargetTypeFilter(IndexedDistinctFilter):
    title = "target type"
    parameter_name = "target_type"
    table = "audit_logs"
    column = "target_type"  # idx_audit_target (target_type, target_id)


class ActorFilter(TextInputFilter):
    """The acting user, typed as an email or a user id: one lookup by primary key or idx_users_email, then
    idx_audit_actor (a list of every user who ever acted would be as long as the user table)."""

    title = "actor (user)"
    parameter_name = "actor"
    placeholder = "email or user ID"

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = (self.value() or "").strip()
        if not value:
            return queryset
        try:
            return queryset.filter(actor_user_id=uuid.UUID(value))
        except ValueError:
            # Audit sits below accounts: the user model through settings, the address normalised as
            # UserManager.create_user stores it.
            users = get_user_model().objects
            user = users.filter(email=users.normalize_email(value).lower()).values("pk")[:1]
            return queryset.filter(actor_user_id=Subquery(user))


# "meeting_controller:mc-1" names a target by type and id; anything else is an id of any type.
_TYPED_TARGET = re.compile(r"(?P<type>[a-z][a-z0-9_]{0,49}):(?P<id>.+)")


@admin.register(AuditLog)
class AuditLogAdmin(UncountedListMixin, admin.ModelAdmin):
    """Every filter is served by an index: event type (idx_audit_event_type), actor (idx_audit_actor), target
    type and the search by target (idx_audit_target), the date hierarchy (idx_audit_created_at, see
    darktower.templatetags.dt_admin). Result and actor type have a handful of values each; the page reads
    idx_audit_created_at backwards and stops after a page of matches."""

    list_display = ("created_at", "event_type", "action", "result", "actor_type", "actor", "target_type",
                    "target_id")
    list_filter = (EventTypeFilter, "result", ActorFilter, "actor_type", TargetTypeFilter)
    list_select_related = ("actor_user",)
    search_fields = ("target_id",)
    search_help_text = "Find a target by type:id (e.g. meeting_controller:mc-us-east-1-01) or by its ID alone."
    date_hierarchy = "created_at"
    ordering = ("-created_at", "-id")
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100

    @admin.display(description="actor")
    def actor(self, obj: AuditLog) -> str:
        """Who acted: the user, or for a service the client ID of its credential (services record it in the
        metadata, or as the target of their token requests)."""
        if obj.actor_user_id is not None:
            return str(obj.actor_user)
        if obj.actor_type == ActorType.SERVICE:
            client_id = (obj.metadata or {}).get("client_id")
            if not client_id and obj.target_type == "service_credential":
                client_id = obj.target_id
            return str(client_id or "-")
        return "-"

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet[AuditLog], search_term: str
    ) -> tuple[QuerySet[AuditLog], bool]:
        term = search_term.strip()
        if not term:
            return queryset, False
        typed = _TYPED_TARGET.fullmatch(term)
        if typed:
            return queryset.filter(target_type=typed["type"], target_id=typed["id"]), False
        # idx_audit_target leads with target_type: naming every type (a loose index scan, a few probes) lets
        # PostgreSQL 16, which has no skip scan, use the index for an id alone.
        types = RawSQL(distinct_values_sql("audit_logs", "target_type"), [])  # noqa: S611 -- constants only
        return queryset.filter(target_type__in=types, target_id=term), False

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # retention drops whole partitions; single rows are never removed


class OutboxStateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [
            ("unprocessed", "unprocessed (pending or backing off)"),
            ("failed", "failed (poison, retry needed)"),
            ("processed", "processed"),
        ]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "unprocessed":
            return queryset.filter(processed_at__isnull=True, failed_at__isnull=True)  # idx_outbox_events_pending
        if self.value() == "failed":
            return queryset.filter(processed_at__isnull=True, failed_at__isnull=False)
        if self.value() == "processed":
            return queryset.filter(processed_at__isnull=False)
        return queryset


@admin.register(OutboxEvent)
class OutboxEventAdmin(UncountedListMixin, admin.ModelAdmin):
    list_display = ("id", "event_type", "aggregate_type", "aggregate_id", "created_at", "attempts",
                    "next_attempt_at", "failed_at", "processed_at", "error")
    list_filter = (OutboxStateFilter, "aggregate_type")
    search_fields = ("=aggregate_id",)
    ordering = ("-id",)
    show_facets = admin.ShowFacets.NEVER
    actions = ("retry_action",)

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # the relay owns these rows; a form save would race it

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_retry_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("audit.retry_outboxevent")

    @admin.display(description="last error")
    def error(self, obj: OutboxEvent) -> str:
        return (obj.last_error or "")[:120]

    @admin.action(description="Retry selected unpublished events", permissions=["retry"])
    def retry_action(self, request: HttpRequest, queryset: QuerySet[OutboxEvent]) -> HttpResponse | None:
        if request.POST.get("post") == "yes":
            retried = outbox_events_retry(event_ids=queryset.values_list("id", flat=True),
                                          actor_user_id=request.user.pk)
            self.message_user(request, f"{retried} event(s) put back for the relay; processed ones were left alone.")
            return None
        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="retry_action",
            title="Retry outbox events",
            description="These events get a fresh set of attempts now; processed events are left alone.",
            perform=lambda event: "",
        )


# django-celery-beat's own admin is registered before ours (INSTALLED_APPS order); its actions (enable, disable,
# toggle, run now) declare no permission, so Django would offer them to a view-only "operator viewer".
admin.site.unregister(PeriodicTask)


@admin.register(PeriodicTask)
class PeriodicTaskAdmin(CeleryBeatPeriodicTaskAdmin):
    """Celery beat's schedule: every action changes or runs tasks, so they need the change permission."""

    def get_actions(self, request: HttpRequest) -> dict[str, Any]:
        if not self.has_change_permission(request):
            return {}
        return super().get_actions(request)
