"""Routes of the meetings API and the recordings (included at the site root)."""

from __future__ import annotations

from django.urls import path

from meetings.api import views

urlpatterns = [
    path("api/v1/meetings", views.MeetingListCreateView.as_view(), name="meetings"),
    path("api/v1/meetings/<uuid:meeting_id>/end", views.MeetingEndView.as_view(), name="meeting-end"),
    path(
        "api/v1/meetings/<uuid:meeting_id>/participants", views.ParticipantListView.as_view(),
        name="meeting-participants",
    ),
    path(
        "api/v1/meetings/<uuid:meeting_id>/participants/<uuid:participant_id>", views.ParticipantDetailView.as_view(),
        name="meeting-participant",
    ),
    path(
        "api/v1/meetings/<uuid:meeting_id>/participants/<uuid:participant_id>/leave",
        views.ParticipantLeaveView.as_view(), name="participant-leave",
    ),
    path(
        "api/v1/meetings/<uuid:meeting_id>/participants/<uuid:participant_id>/admit",
        views.ParticipantAdmitView.as_view(), name="participant-admit",
    ),
    path(
        "api/v1/meetings/<uuid:meeting_id>/participants/<uuid:participant_id>/deny",
        views.ParticipantDenyView.as_view(), name="participant-deny",
    ),
    path("api/v1/meetings/<uuid:meeting_id>/waiting", views.WaitingListView.as_view(), name="meeting-waiting"),
    path("api/v1/meetings/<uuid:meeting_id>/bans", views.BanListView.as_view(), name="meeting-bans"),
    path(
        "api/v1/meetings/<uuid:meeting_id>/bans/<uuid:ban_id>", views.BanDetailView.as_view(), name="meeting-ban",
    ),
    path(
        "api/v1/meetings/<uuid:meeting_id>/recordings", views.MeetingRecordingsView.as_view(),
        name="meeting-recordings",
    ),
    path("api/v1/meetings/<str:meeting_ref>/join", views.MeetingJoinView.as_view(), name="meeting-join"),
    path("api/v1/meetings/<str:meeting_ref>/guest-token", views.GuestTokenView.as_view(), name="meeting-guest-token"),
    path("api/v1/meetings/<str:meeting_ref>", views.MeetingDetailView.as_view(), name="meeting-detail"),
    path("api/v1/recordings/<uuid:recording_id>", views.RecordingDetailView.as_view(), name="recording-detail"),
    path("api/v1/recordings/<uuid:recording_id>/share", views.RecordingShareView.as_view(), name="recording-share"),
    path(
        "api/v1/recordings/<uuid:recording_id>/share/rotate", views.RecordingShareRotateView.as_view(),
        name="recording-share-rotate",
    ),
    path(
        "api/v1/recordings/<uuid:recording_id>/unshare", views.RecordingUnshareView.as_view(),
        name="recording-unshare",
    ),
    path("api/v1/shared-recordings/<str:token>", views.SharedRecordingView.as_view(), name="recording-shared"),
]
