"""The fleet dashboard: the controllers' changelist with a per-region summary (and the region's last hour of
health transitions) on top, live-refreshed badges and heartbeat ages, and the operators' actions
(controllers.services.operations). Media handlers alike: drain, undrain and mark unhealthy, each a service of
the same module (compare-and-set, transition and audit row naming the operator).

Every column reads the row or an annotation of the page's one SELECT (controllers.selectors): the number of
queries does not grow with the rows (tests/controllers/admin/test_query_counts.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypedDict

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.urls import path, reverse
from django.utils.html import format_html, format_html_join
from django.utils.safestring import mark_safe

from controllers.models import (
    ComponentType,
    HealthStatus,
    HealthTransition,
    MediaHandler,
    MeetingController,
)
from controllers.selectors import (
    RECENT_TRANSITIONS_WINDOW,
    component_transitions_recent,
    controllers_for_dashboard,
    controllers_live_status,
    fleet_summary_by_region,
    handlers_for_dashboard,
    handlers_live_status,
    transitions_recent_by_region,
)
from controllers.services import operations

if TYPE_CHECKING:
    from django_stubs_ext import WithAnnotations

    # FleetAdminMixin as the checker sees it (mixed into a ModelAdmin); at run time it derives from object.
    _ModelAdminBase = admin.ModelAdmin[Any]

    class _DashboardAnnotations(TypedDict):
        active_assignments: int

    # A row of controllers_for_dashboard(): the model with the annotations its columns read.
    DashboardController = WithAnnotations[MeetingController, _DashboardAnnotations]
else:
    _ModelAdminBase = object
from controllers.members import CONTROLLERS, HANDLERS, HealthChange
from controllers.services.operations import handler_drain, handler_mark_unhealthy, handler_undrain
from controllers.services.ownership import members_transfer
from darktower.admin_tools import (
    IndexedDistinctFilter,
    UncountedListMixin,
    capacity_bar,
    confirmed_action,
    health_badge,
)

# The poll asks for the rows on screen only; a page never shows more than list_per_page.
LIVE_MAX_IDS = 500
POLL_INTERVAL_MS = 5000
# The summary's timeline of the last hour's transitions shows at most this many per region.
RECENT_TRANSITIONS_PER_REGION = 50


class ControllerRegionFilter(IndexedDistinctFilter):
    title = "region"
    parameter_name = "region"
    table = "meeting_controllers"
    column = "region"  # idx_controllers_region


class HandlerRegionFilter(IndexedDistinctFilter):
    title = "region"
    parameter_name = "region"
    table = "media_handlers"
    column = "region"  # idx_handlers_region


def _age_seconds(obj: Any) -> int:
    return max(0, int(obj.heartbeat_age.total_seconds()))


def _heartbeat_age_html(obj: Any, pk: str) -> str:
    age = _age_seconds(obj)
    stale = age > settings.HEARTBEAT_STALE_THRESHOLD_SECONDS
    return format_html(
        '<span class="dt-age{}" data-id="{}">{}</span>&nbsp;s', " dt-stale" if stale else "", pk, age
    )


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _endpoints(*endpoints: str | None) -> str:
    return format_html_join(mark_safe("<br>"), "<code>{}</code>", ((e,) for e in endpoints if e))


def _live_payload(rows: list[dict[str, Any]], pk: str) -> dict[str, Any]:
    items = []
    for row in rows:
        age = max(0, int(row.pop("heartbeat_age").total_seconds()))
        items.append({**row, "id": row.pop(pk), "heartbeat_age_seconds": age})
    return {"stale_threshold_seconds": settings.HEARTBEAT_STALE_THRESHOLD_SECONDS, "items": items}


def _requested_ids(request: HttpRequest) -> list[str]:
    return [value for value in request.GET.get("ids", "").split(",") if value][:LIVE_MAX_IDS]


class FleetAdminMixin(_ModelAdminBase):
    """Shared by both fleet changelists: the summary on top, the live JSON endpoint, a view-only change page with
    the operators' buttons."""

    live_url_name: str
    component_type: ComponentType
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    list_per_page = 100

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # members register themselves over gRPC

    # A fleet's move to another credential is an operator's fleet action like a drain (operator group).
    def has_transfer_owner_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("controllers.drain_meetingcontroller")

    @admin.action(description="Move selected members to another service credential", permissions=["transfer_owner"])
    def transfer_owner_action(self, request: HttpRequest, queryset: QuerySet[Any]) -> HttpResponse | None:
        kind = HANDLERS if self.component_type == ComponentType.HANDLER else CONTROLLERS
        to_client_id = request.POST.get("to_client_id", "").strip()
        if request.POST.get("post") == "yes" and not to_client_id:
            self.message_user(request, "Name the client ID of the new owner.", messages.ERROR)
            return None

        def perform(obj: Any) -> str:
            moved = members_transfer(kind=kind, to_client_id=to_client_id, member_ids=[obj.pk],
                                     actor_user_id=request.user.pk)
            if not moved:
                return f"{obj.pk}: already owned by {to_client_id}."
            return f"{obj.pk}: {moved[0].from_client_id or '(unowned)'} -> {to_client_id}."

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="transfer_owner_action",
            title="Move members to another service credential",
            description="From now on only the new credential may re-register these members, beat for them and end "
            "their meetings; the old one is refused (by each gRPC process from its next heartbeat flush).",
            perform=perform,
            extra_fields=[{
                "name": "to_client_id", "label": "New owner (client ID)", "type": "text", "min": None, "value": "",
                "help": "An active service credential holding the members' registration scope.",
            }],
        )

    # The change page's buttons (templates/admin/controllers/_fleet_change_form.html): each posts this list's
    # action for the one member, so it confirms, checks permissions and calls the service exactly as the action does.
    object_actions = {"drain_action": "Drain", "undrain_action": "Undrain", "mark_unhealthy_action": "Mark unhealthy"}

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        allowed = self.get_actions(request)
        buttons = [
            {"name": name, "label": label} for name, label in self.object_actions.items() if name in allowed
        ]
        return super().change_view(request, object_id, form_url, {**(extra_context or {}), "object_actions": buttons})

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Health changes only through the actions (compare-and-set services); a form save would write back
        # every column over the heartbeats that arrived since the page was rendered.
        return False

    def changelist_view(self, request: HttpRequest, extra_context: dict[str, Any] | None = None) -> HttpResponse:
        summary = fleet_summary_by_region()
        transitions = transitions_recent_by_region(
            regions=[region.region for region in summary], window=RECENT_TRANSITIONS_WINDOW,
            limit=RECENT_TRANSITIONS_PER_REGION,
        )
        extra_context = {
            **(extra_context or {}),
            "fleet_regions": [(region, transitions.get(region.region, [])) for region in summary],
            "live_url": reverse(f"admin:{self.live_url_name}"),
            "poll_interval_ms": POLL_INTERVAL_MS,
            "stale_threshold_seconds": settings.HEARTBEAT_STALE_THRESHOLD_SECONDS,
        }
        return super().changelist_view(request, extra_context)

    @admin.display(description="Recent health transitions")
    def transitions_timeline(self, obj: Any) -> str:
        transitions = component_transitions_recent(component_type=self.component_type, component_id=obj.pk)
        if not transitions:
            return "No transitions recorded."
        return format_html(
            '<ol class="dt-timeline">{}</ol>',
            format_html_join(
                "",
                '<li><time>{}</time> {} &rarr; {} <em>{}</em> ({}{})</li>',
                (
                    (
                        t.created_at.strftime("%Y-%m-%d %H:%M:%S"), t.from_status or "new",
                        health_badge(t.to_status), t.reason, t.actor_type,
                        f" {t.actor_user_id}" if t.actor_user_id else "",
                    )
                    for t in transitions
                ),
            ),
        )


@admin.register(MeetingController)
class MeetingControllerAdmin(FleetAdminMixin, admin.ModelAdmin):
    component_type = ComponentType.CONTROLLER
    live_url_name = "controllers_meetingcontroller_live"
    # What a person watching needs first (health, heartbeat age, drain state) on the left; endpoints, the widest
    # column, last.
    list_display = (
        "controller_id", "region", "health", "heartbeat_age", "drain", "meetings", "participants", "cpu", "memory",
        "version", "endpoints",
    )
    list_filter = (ControllerRegionFilter, "health_status")
    search_fields = ("controller_id", "grpc_endpoint", "webtransport_endpoint")
    ordering = ("region", "controller_id")
    actions = (
        "drain_action", "undrain_action", "mark_unhealthy_action", "end_assignments_action", "transfer_owner_action",
    )
    fieldsets = (
        (None, {"fields": (
            "controller_id", "region", "health_status", "health_changed_at", "version", "owner_client_id",
        )}),
        ("Endpoints", {"fields": ("grpc_endpoint", "webtransport_endpoint", "endpoint")}),
        ("Load", {"fields": (
            "current_meetings", "max_meetings", "current_participants", "max_participants",
            "assigned_since_heartbeat", "reserved_participants", "cpu_usage_percent", "memory_usage_percent",
            "last_heartbeat_at",
        )}),
        ("Health model", {"fields": (
            "unhealthy_since", "good_heartbeats", "hold_down_until", "drain_deadline", "drain_target_controller_id",
        )}),
        ("History", {"fields": ("transitions_timeline", "created_at", "updated_at", "metadata")}),
    )
    readonly_fields = ("transitions_timeline",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[MeetingController]:
        return controllers_for_dashboard()

    def get_urls(self) -> list[Any]:
        live = path("live/", self.admin_site.admin_view(self.live_view), name=self.live_url_name)
        return [live, *super().get_urls()]

    def live_view(self, request: HttpRequest) -> JsonResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        rows = controllers_live_status(_requested_ids(request))
        for row in rows:
            row["drain_deadline"] = row["drain_deadline"] and row["drain_deadline"].isoformat()
        return JsonResponse(_live_payload(rows, "controller_id"))

    @admin.display(description="health", ordering="health_status")
    def health(self, obj: MeetingController) -> str:
        return health_badge(obj.health_status, data_id=obj.pk)

    @admin.display(description="meetings (incl. in flight)", ordering="current_meetings")
    def meetings(self, obj: MeetingController) -> str:
        # As placement and the summary count them: reported plus assigned since that report.
        return capacity_bar(
            obj.current_meetings + obj.assigned_since_heartbeat, obj.max_meetings, css_class="dt-meetings",
            data_id=obj.pk,
        )

    @admin.display(description="participants", ordering="current_participants")
    def participants(self, obj: MeetingController) -> str:
        return capacity_bar(
            obj.current_participants, obj.max_participants, css_class="dt-participants", data_id=obj.pk
        )

    @admin.display(description="CPU", ordering="cpu_usage_percent")
    def cpu(self, obj: MeetingController) -> str:
        return _percent(obj.cpu_usage_percent)

    @admin.display(description="memory", ordering="memory_usage_percent")
    def memory(self, obj: MeetingController) -> str:
        return _percent(obj.memory_usage_percent)

    @admin.display(description="heartbeat age", ordering="heartbeat_age")
    def heartbeat_age(self, obj: MeetingController) -> str:
        return _heartbeat_age_html(obj, obj.pk)

    @admin.display(description="endpoints")
    def endpoints(self, obj: MeetingController) -> str:
        return _endpoints(obj.grpc_endpoint, obj.webtransport_endpoint)

    @admin.display(description="drain", ordering="drain_deadline")
    def drain(self, obj: DashboardController) -> str:
        if obj.health_status != HealthStatus.DRAINING:
            return format_html('<span class="dt-drain" data-id="{}">{}</span>', obj.pk, "-")
        if obj.drain_deadline is None:
            return format_html(
                '<span class="dt-drain" data-id="{}">self-reported, no deadline; {} active</span>',
                obj.pk, obj.active_assignments,
            )
        target = f" → {obj.drain_target_controller_id}" if obj.drain_target_controller_id else ""
        return format_html(
            '<span class="dt-drain" data-id="{}">until {}{}; {} active</span>',
            obj.pk, obj.drain_deadline.strftime("%Y-%m-%d %H:%M:%S"), target, obj.active_assignments,
        )

    # Permissions of the actions (operator group; accounts/migrations/0003_operator_groups.py).
    def has_drain_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("controllers.drain_meetingcontroller")

    def has_mark_unhealthy_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("controllers.mark_unhealthy_meetingcontroller")

    def has_end_assignments_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("controllers.end_assignments_meetingcontroller")

    @admin.action(description="Drain selected controllers (no new meetings)", permissions=["drain"])
    def drain_action(self, request: HttpRequest, queryset: QuerySet[MeetingController]) -> HttpResponse | None:
        raw_deadline = request.POST.get("deadline_seconds", "").strip()
        deadline: int | None = None
        if raw_deadline:
            try:
                deadline = int(raw_deadline)
            except ValueError:
                self.message_user(request, "The deadline must be a whole number of seconds.", messages.ERROR)
                return None

        def perform(obj: MeetingController) -> str:
            started = operations.controller_drain(
                controller_id=obj.pk, actor_user_id=request.user.pk, deadline_seconds=deadline
            )
            return (
                f"{obj.pk}: draining until {started.drain_deadline:%Y-%m-%d %H:%M:%S}; "
                f"{started.active_assignments} active assignment(s) left."
            )

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="drain_action",
            title="Drain controllers",
            description="These controllers get no new meetings from now on. At the deadline their remaining "
            "meetings are ended (the next join reassigns them) and they go unhealthy unless they have gone away.",
            perform=perform,
            extra_fields=[{
                "name": "deadline_seconds", "label": "Deadline (seconds)", "type": "number", "min": 0,
                "value": settings.DRAIN_DEFAULT_DEADLINE_SECONDS, "help": "0 ends the remaining meetings at once.",
            }],
        )

    @admin.action(description="Undrain selected controllers (back to pending)", permissions=["drain"])
    def undrain_action(self, request: HttpRequest, queryset: QuerySet[MeetingController]) -> HttpResponse | None:
        def perform(obj: MeetingController) -> str:
            operations.controller_undrain(controller_id=obj.pk, actor_user_id=request.user.pk)
            return f"{obj.pk}: pending; placement resumes after its next good heartbeat."

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="undrain_action",
            title="Undrain controllers",
            description="These controllers go back to pending and receive meetings again after their next good "
            "heartbeat.",
            perform=perform,
        )

    @admin.action(description="Mark selected controllers unhealthy", permissions=["mark_unhealthy"])
    def mark_unhealthy_action(
        self, request: HttpRequest, queryset: QuerySet[MeetingController]
    ) -> HttpResponse | None:
        def perform(obj: MeetingController) -> str:
            operations.controller_mark_unhealthy(controller_id=obj.pk, actor_user_id=request.user.pk)
            return f"{obj.pk}: unhealthy."

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="mark_unhealthy_action",
            title="Mark controllers unhealthy",
            description="These controllers leave placement now. Heartbeats do not bring them back; only "
            "re-registration does.",
            perform=perform,
        )

    @admin.action(description="End selected controllers' active assignments", permissions=["end_assignments"])
    def end_assignments_action(
        self, request: HttpRequest, queryset: QuerySet[MeetingController]
    ) -> HttpResponse | None:
        def perform(obj: MeetingController) -> str:
            ended = operations.controller_end_assignments(controller_id=obj.pk, actor_user_id=request.user.pk)
            return f"{obj.pk}: {ended} assignment(s) ended."

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="end_assignments_action",
            title="End active assignments",
            description="Every active assignment of these controllers ends; the next join of each meeting picks "
            "a controller afresh.",
            perform=perform,
        )


@admin.register(MediaHandler)
class MediaHandlerAdmin(FleetAdminMixin, admin.ModelAdmin):
    component_type = ComponentType.HANDLER
    live_url_name = "controllers_mediahandler_live"
    list_display = (
        "handler_id", "region", "health", "streams", "bitrate", "cpu", "memory", "bandwidth", "heartbeat_age",
        "endpoints",
    )
    list_filter = (HandlerRegionFilter, "health_status")
    search_fields = ("handler_id", "grpc_endpoint", "webtransport_endpoint")
    ordering = ("region", "handler_id")
    actions = ("drain_action", "undrain_action", "mark_unhealthy_action", "transfer_owner_action")
    readonly_fields = ("transitions_timeline",)

    def get_queryset(self, request: HttpRequest) -> QuerySet[MediaHandler]:
        return handlers_for_dashboard()

    def get_urls(self) -> list[Any]:
        live = path("live/", self.admin_site.admin_view(self.live_view), name=self.live_url_name)
        return [live, *super().get_urls()]

    def live_view(self, request: HttpRequest) -> JsonResponse:
        if not self.has_view_permission(request):
            raise PermissionDenied
        return JsonResponse(_live_payload(handlers_live_status(_requested_ids(request)), "handler_id"))

    @admin.display(description="health", ordering="health_status")
    def health(self, obj: MediaHandler) -> str:
        return health_badge(obj.health_status, data_id=obj.pk)

    @admin.display(description="streams", ordering="current_streams")
    def streams(self, obj: MediaHandler) -> str:
        return capacity_bar(obj.current_streams, obj.max_streams, css_class="dt-streams", data_id=obj.pk)

    @admin.display(description="bitrate (Mbps)", ordering="current_bitrate_mbps")
    def bitrate(self, obj: MediaHandler) -> str:
        return capacity_bar(obj.current_bitrate_mbps, obj.max_bitrate_mbps)

    @admin.display(description="CPU", ordering="cpu_usage_percent")
    def cpu(self, obj: MediaHandler) -> str:
        return _percent(obj.cpu_usage_percent)

    @admin.display(description="memory", ordering="memory_usage_percent")
    def memory(self, obj: MediaHandler) -> str:
        return _percent(obj.memory_usage_percent)

    @admin.display(description="bandwidth", ordering="bandwidth_usage_percent")
    def bandwidth(self, obj: MediaHandler) -> str:
        return _percent(obj.bandwidth_usage_percent)

    @admin.display(description="heartbeat age", ordering="heartbeat_age")
    def heartbeat_age(self, obj: MediaHandler) -> str:
        return _heartbeat_age_html(obj, obj.pk)

    @admin.display(description="endpoints")
    def endpoints(self, obj: MediaHandler) -> str:
        return _endpoints(obj.grpc_endpoint, obj.webtransport_endpoint)

    # No permissions of their own yet (media_handlers has no custom ones): the operator group's fleet
    # permissions, which the viewer group lacks, gate these as they gate the controllers' actions.
    def has_drain_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("controllers.drain_meetingcontroller")

    def has_mark_unhealthy_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm("controllers.mark_unhealthy_meetingcontroller")

    def _handler_action(
        self,
        request: HttpRequest,
        queryset: QuerySet[MediaHandler],
        *,
        service: Callable[..., HealthChange],
        action: str,
        title: str,
        description: str,
        done: str,
    ) -> HttpResponse | None:
        """One service call per handler (compare-and-set, transition and audit row naming the operator); a
        handler in another state is reported, not changed."""

        def perform(obj: MediaHandler) -> str:
            service(handler_id=obj.pk, actor_user_id=request.user.pk)
            return f"{obj.pk}: {done}"

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action=action, title=title,
            description=description, perform=perform,
        )

    @admin.action(description="Drain selected media handlers (no new streams)", permissions=["drain"])
    def drain_action(self, request: HttpRequest, queryset: QuerySet[MediaHandler]) -> HttpResponse | None:
        return self._handler_action(
            request, queryset, service=handler_drain, action="drain_action", title="Drain media handlers",
            description="These handlers go draining: heartbeats no longer change their state and the stale "
            "sweep leaves them alone until they are undrained or re-register.",
            done="draining.",
        )

    @admin.action(description="Undrain selected media handlers (back to pending)", permissions=["drain"])
    def undrain_action(self, request: HttpRequest, queryset: QuerySet[MediaHandler]) -> HttpResponse | None:
        return self._handler_action(
            request, queryset, service=handler_undrain, action="undrain_action", title="Undrain media handlers",
            description="These handlers go back to pending and become healthy again after their next good report.",
            done="pending; healthy again after its next good report.",
        )

    @admin.action(description="Mark selected media handlers unhealthy", permissions=["mark_unhealthy"])
    def mark_unhealthy_action(
        self, request: HttpRequest, queryset: QuerySet[MediaHandler]
    ) -> HttpResponse | None:
        return self._handler_action(
            request, queryset, service=handler_mark_unhealthy, action="mark_unhealthy_action",
            title="Mark media handlers unhealthy",
            description="These handlers are marked unhealthy now; they come back through the hold-down or by "
            "re-registering.",
            done="unhealthy.",
        )


class TransitionRegionFilter(IndexedDistinctFilter):
    title = "region"
    parameter_name = "region"
    table = "controller_health_transitions"
    column = "region"  # idx_health_transitions_region


@admin.register(HealthTransition)
class HealthTransitionAdmin(UncountedListMixin, admin.ModelAdmin):
    """The transition history, read-only: rows are written by the health services and removed by retention."""

    list_display = ("created_at", "component_type", "component_id", "region", "from_status", "to_status", "reason",
                    "actor_type")
    list_filter = ("component_type", TransitionRegionFilter, "to_status", "reason", "actor_type")
    search_fields = ("=component_id",)
    ordering = ("-created_at", "-id")
    show_facets = admin.ShowFacets.NEVER

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
