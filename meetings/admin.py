"""Meetings with their participants and recordings, assignments and recordings: read-mostly (rows change
through the meeting services and the controllers, never by a form save; the recordings' share actions call the
recording services)."""

from __future__ import annotations

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import reverse

from darktower.admin_tools import UncountedListMixin, confirmed_action
from darktower.errors import DomainError
from meetings.models import Meeting, MeetingAssignment, MeetingBan, MeetingParticipant, Recording
from meetings.services.recordings import MANAGE_SHARE_PERMISSION, recording_share_rotate, recording_unshare


class _ReadOnlyMixin:
    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


class ParticipantInline(_ReadOnlyMixin, admin.TabularInline):
    model = MeetingParticipant
    fields = ("display_name", "user", "role", "status", "joined_at", "left_at", "leave_reason", "client_version")
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[MeetingParticipant]:
        return super().get_queryset(request).select_related("user").order_by("joined_at")


class BanInline(_ReadOnlyMixin, admin.TabularInline):
    """The host's bans. The principal is not shown: for a guest it is the client's address (personal data); the
    host lifts bans over the API (meeting_ban_lift), never here."""

    model = MeetingBan
    fields = ("display_name", "participant_id", "banned_by_user", "created_at")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[MeetingBan]:
        return super().get_queryset(request).select_related("banned_by_user").order_by("created_at")


class AssignmentInline(_ReadOnlyMixin, admin.TabularInline):
    """Where the meeting runs: its MC per region and the media handlers that MC was given."""

    model = MeetingAssignment
    fields = ("region", "meeting_controller", "media_handlers", "assigned_at", "ended_at", "end_reason")
    readonly_fields = ("media_handlers",)
    extra = 0
    can_delete = False
    show_change_link = False

    def get_queryset(self, request: HttpRequest) -> QuerySet[MeetingAssignment]:
        return super().get_queryset(request).order_by("-assigned_at", "-id")

    @admin.display(description="media handlers")
    def media_handlers(self, obj: MeetingAssignment) -> str:
        return media_handlers_text(obj)


def media_handlers_text(obj: MeetingAssignment) -> str:
    return ", ".join(obj.media_handler_ids or ()) or "-"


class RecordingInline(_ReadOnlyMixin, admin.TabularInline):
    model = Recording
    fields = ("started_at", "ended_at", "status", "duration_seconds", "file_size_bytes", "is_public")
    extra = 0
    can_delete = False
    show_change_link = True

    def get_queryset(self, request: HttpRequest) -> QuerySet[Recording]:
        return super().get_queryset(request).order_by("-started_at")


@admin.register(Meeting)
class MeetingAdmin(_ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("meeting_code", "display_name", "status", "created_by_user", "assigned_region",
                    "assigned_controller_id", "scheduled_start_time", "created_at")
    list_filter = ("status",)
    list_select_related = ("created_by_user",)
    search_fields = ("meeting_code", "display_name")
    ordering = ("-created_at",)
    show_full_result_count = False
    inlines = (AssignmentInline, ParticipantInline, BanInline, RecordingInline)


class ActiveAssignmentFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return [("active", "active"), ("ended", "ended")]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value() == "active":
            return queryset.filter(ended_at__isnull=True)
        if self.value() == "ended":
            return queryset.filter(ended_at__isnull=False)
        return queryset


@admin.register(MeetingAssignment)
class MeetingAssignmentAdmin(UncountedListMixin, _ReadOnlyMixin, admin.ModelAdmin):
    list_display = ("id", "meeting", "region", "meeting_controller_id", "media_handlers", "assigned_at", "ended_at",
                    "end_reason", "assigned_by_gc_id")
    list_filter = (ActiveAssignmentFilter,)
    list_select_related = ("meeting",)
    search_fields = ("meeting__meeting_code", "=meeting_controller__controller_id")
    ordering = ("-assigned_at", "-id")

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False  # ending an assignment is the controllers' "end assignments" action

    @admin.display(description="media handlers")
    def media_handlers(self, obj: MeetingAssignment) -> str:
        return media_handlers_text(obj)


@admin.register(Recording)
class RecordingAdmin(_ReadOnlyMixin, admin.ModelAdmin):
    """Only the share token's hash is stored, and it is not among the fields either. Staff allowed to
    (meetings.manage_share_recording; superusers) end a share link or replace it, each confirmed and audited;
    a replaced link's new token is shown once, on the page that answers the action."""

    list_display = ("recording_id", "meeting", "status", "started_at", "ended_at", "duration_seconds",
                    "file_size_bytes", "is_public", "share_expires_at")
    list_filter = ("status", "is_public")
    list_select_related = ("meeting",)
    search_fields = ("meeting__meeting_code", "=recording_id")
    ordering = ("-started_at",)
    show_full_result_count = False
    fields = ("recording_id", "meeting", "started_by_user", "status", "error_message", "started_at", "ended_at",
              "duration_seconds", "file_size_bytes", "storage_bucket", "storage_path", "video_codec", "audio_codec",
              "resolution", "is_public", "share_expires_at", "created_at", "updated_at")
    actions = ("unshare_action", "rotate_share_action")

    def has_manage_share_permission(self, request: HttpRequest) -> bool:
        return request.user.has_perm(MANAGE_SHARE_PERMISSION)

    @admin.action(description="Unshare selected recordings (their links stop working)", permissions=["manage_share"])
    def unshare_action(self, request: HttpRequest, queryset: QuerySet[Recording]) -> HttpResponse | None:
        def perform(obj: Recording) -> str:
            assert request.user.pk is not None  # the admin serves signed-in staff only
            recording = recording_unshare(recording_id=obj.pk, actor_user_id=request.user.pk, operator=True)
            return f"{recording.pk}: not shared."

        return confirmed_action(
            modeladmin=self, request=request, queryset=queryset, action="unshare_action",
            title="Unshare recordings",
            description="The share links of these recordings stop working at once. Their hosts can share them "
            "again, with a new link.",
            perform=perform,
        )

    @admin.action(description="Rotate selected recordings' share links", permissions=["manage_share"])
    def rotate_share_action(self, request: HttpRequest, queryset: QuerySet[Recording]) -> HttpResponse | None:
        if request.POST.get("post") != "yes":
            return confirmed_action(
                modeladmin=self, request=request, queryset=queryset, action="rotate_share_action",
                title="Rotate share links",
                description="Each recording gets a new share link, shown once on the next page, with the same end. "
                "The old links stop working at once. Recordings that are not shared are left alone.",
                perform=lambda obj: "",
            )
        rotated: list[tuple[Recording, str]] = []
        assert request.user.pk is not None  # the admin serves signed-in staff only
        for obj in queryset:
            try:
                shared = recording_share_rotate(recording_id=obj.pk, actor_user_id=request.user.pk, operator=True)
            except DomainError as error:
                self.message_user(request, f"{obj.pk}: {error}", messages.ERROR)
                continue
            link = request.build_absolute_uri(reverse("recording-shared", args=[shared.token]))
            rotated.append((shared.recording, link))
        if not rotated:
            return None
        request.current_app = self.admin_site.name
        context = {
            **self.admin_site.each_context(request),
            "title": "New share links",
            "opts": self.model._meta,
            "rotated": rotated,
        }
        # The links are in this page only: a message would carry them in the messages cookie.
        return TemplateResponse(request, "admin/meetings/recording/share_rotated.html", context)
