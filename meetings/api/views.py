"""Meetings, the join flow, participants and recordings over REST. Thin: parse, call one service or
selector, render; errors are mapped by darktower.api.errors."""

from __future__ import annotations

import uuid
from functools import lru_cache
from typing import Any, ClassVar

from django.db.models import QuerySet
from django.urls import get_script_prefix, reverse
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.services.users import MEETINGS_CREATE, MEETINGS_READ, MEETINGS_WRITE, RECORDINGS_READ, RECORDINGS_WRITE
from darktower.api.idempotency import guest_principal
from darktower.api.location import CreatedLocation
from darktower.api.ratelimit import (
    RateLimit,
    join_limits,
    meeting_create_limits,
    meeting_update_limits,
    recording_write_limits,
)
from darktower.api.schema import error_responses
from darktower.api.serializers import EmptyRequest
from darktower.api.views import ApiListView, ApiView, client_ip, peer_ip
from darktower.errors import NotFound
from meetings import selectors
from meetings.api.filters import MeetingFilter, RecordingFilter
from meetings.api.join import join_answer, join_request
from meetings.api.serializers import (
    BanSerializer,
    DenyRequest,
    GuestTokenRequest,
    JoinRequest,
    JoinResponse,
    LeaveRequest,
    MeetingCreateRequest,
    MeetingSerializer,
    MeetingUpdateRequest,
    MeetingViewSerializer,
    ParticipantSerializer,
    RecordingSerializer,
    RecordingShareRequest,
    RecordingShareResponse,
    RecordingUpdateRequest,
    SharedRecordingSerializer,
    meeting_for_joiner,
)
from meetings.models import Meeting, MeetingBan, MeetingParticipant, Recording
from meetings.services.admission import meeting_ban_lift, participant_admit, participant_deny
from meetings.services.meetings import meeting_create, meeting_end, meeting_update
from meetings.services.participants import (
    JoinResult,
    meeting_join,
    participant_leave,
    participant_token_reissue,
)
from meetings.services.recordings import (
    SharedRecording,
    recording_share,
    recording_share_rotate,
    recording_start,
    recording_unshare,
    recording_update,
)

MEETING_REF = OpenApiParameter(
    "meeting_ref", str, OpenApiParameter.PATH, description="The meeting's id (UUID) or its meeting_code."
)
TAGS = ["meetings"]


def _validated(serializer_class: type, request: Request) -> dict[str, Any]:
    serializer = serializer_class(data=request.data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _meeting_id(meeting_ref: str) -> uuid.UUID:
    meeting_id = selectors.meetings_by_ref(meeting_ref).values_list("pk", flat=True).first()
    if meeting_id is None:
        raise NotFound("No such meeting.")
    return meeting_id


def _user_agent(request: Request) -> str | None:
    return request.META.get("HTTP_USER_AGENT", "")[:1000] or None


def _join_response(result: JoinResult) -> Response:
    """201 with a new participant; 200 when a signed-in user still present got their participant back."""
    return Response(join_answer(result), status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK)


_PATH_MEETING = uuid.UUID(int=1)
_PATH_PARTICIPANT = uuid.UUID(int=2)


@lru_cache(maxsize=8)
def _participant_path(script_prefix: str) -> tuple[str, str]:
    """reverse("meeting-participant") for a script prefix, split around its two UUIDs (which the URL writes as
    they are): every first join answers with this Location, and reversing the URL pattern for each one is work
    that does not depend on the join."""
    path = reverse("meeting-participant", args=[_PATH_MEETING, _PATH_PARTICIPANT])
    before, rest = path.split(str(_PATH_MEETING))
    between, after = rest.split(str(_PATH_PARTICIPANT))
    assert not after, "the participant's path ends with its id"
    return before, between


class JoinReplayMixin(CreatedLocation):
    """A new participant's 201 carries its Location. Idempotent replays of a join: the stored response keeps no
    meeting token (a secret at rest for 24 hours, and expired 5 minutes after issue): a replay answers the
    stored participant and MC with a freshly issued token for that same participant, or 409 / 410 once it has
    left or the meeting has ended."""

    idempotency_redact: ClassVar[tuple[str, ...]] = ("meeting_token",)

    def replayed_body(self, request: Request, status_code: int, body: Any) -> Any:
        if status_code >= 300 or not isinstance(body, dict):
            return body
        participant = body["participant"]
        token = participant_token_reissue(
            meeting_id=uuid.UUID(participant["meeting_id"]), participant_id=uuid.UUID(participant["participant_id"])
        )
        return {**body, "meeting_token": token.token, "expires_in": token.expires_in}

    def created_location(self, body: dict[str, Any]) -> str | None:
        participant = body["participant"]
        meeting_path, participant_path = _participant_path(get_script_prefix())
        return f"{meeting_path}{participant['meeting_id']}{participant_path}{participant['participant_id']}"


@extend_schema_view(
    get=extend_schema(
        operation_id="meetings_list", tags=TAGS, summary="List the meetings you host",
        responses={200: MeetingSerializer(many=True), **error_responses(400, 401, 403, 429)},
    ),
    post=extend_schema(
        operation_id="meetings_create", tags=TAGS, summary="Create a meeting",
        request=MeetingCreateRequest,
        responses={201: MeetingSerializer, **error_responses(400, 401, 403, 409, 413, 415, 422, 429)},
    ),
)
class MeetingListCreateView(CreatedLocation, ApiListView):
    required_scopes = {"GET": MEETINGS_READ, "POST": MEETINGS_CREATE}
    serializer_class = MeetingSerializer
    filterset_class = MeetingFilter

    def rate_limits(self, request: Request) -> list[RateLimit]:
        if request.method == "POST":
            return meeting_create_limits(principal=self.principal.identifier)
        return []

    def get_queryset(self) -> QuerySet[Meeting]:
        if getattr(self, "swagger_fake_view", False):
            return Meeting.objects.none()
        return selectors.meetings_hosted_by(self.principal.user.pk)

    def post(self, request: Request) -> Response:
        data = _validated(MeetingCreateRequest, request)
        meeting = meeting_create(host=self.principal.user, **data)
        return Response(MeetingSerializer(meeting).data, status=status.HTTP_201_CREATED)

    def created_location(self, body: dict[str, Any]) -> str | None:
        return reverse("meeting-detail", args=[body["meeting_id"]])


@extend_schema_view(
    get=extend_schema(
        operation_id="meetings_retrieve", tags=TAGS, summary="Get a meeting by id or code",
        description="The host gets every field; anyone else what a joiner needs (no host id, limits or MC).",
        parameters=[MEETING_REF], responses={200: MeetingViewSerializer, **error_responses(401, 403, 404)},
    ),
    patch=extend_schema(
        operation_id="meetings_update", tags=TAGS, summary="Change a meeting's settings (host only)",
        parameters=[MEETING_REF], request=MeetingUpdateRequest,
        responses={200: MeetingSerializer, **error_responses(400, 401, 403, 404, 410, 413, 415, 429)},
    ),
)
class MeetingDetailView(ApiView):
    required_scopes = {"GET": MEETINGS_READ, "PATCH": MEETINGS_WRITE}

    def rate_limits(self, request: Request) -> list[RateLimit]:
        if request.method == "PATCH":
            return meeting_update_limits(principal=self.principal.identifier)
        return []

    def get(self, request: Request, meeting_ref: str) -> Response:
        meeting = selectors.meetings_by_ref(meeting_ref).first()
        if meeting is None:
            raise NotFound("No such meeting.")
        data: dict[str, Any] = MeetingSerializer(meeting).data
        if meeting.created_by_user_id != self.principal.user.pk:
            data = meeting_for_joiner(data)
        return Response(data)

    def patch(self, request: Request, meeting_ref: str) -> Response:
        changes = _validated(MeetingUpdateRequest, request)
        meeting = meeting_update(
            meeting_id=_meeting_id(meeting_ref), actor_user_id=self.principal.user.pk, changes=changes
        )
        return Response(MeetingSerializer(meeting).data)


@extend_schema_view(
    post=extend_schema(
        operation_id="meetings_end", tags=TAGS, summary="End a meeting (host only)", request=None,
        responses={200: MeetingSerializer, **error_responses(401, 403, 404, 409, 410, 422)},
    )
)
class MeetingEndView(ApiView):
    required_scopes = {"POST": MEETINGS_WRITE}

    def post(self, request: Request, meeting_id: uuid.UUID) -> Response:
        _validated(EmptyRequest, request)
        meeting_end(meeting_id=meeting_id, actor_user_id=self.principal.user.pk)
        return Response(MeetingSerializer(Meeting.objects.get(pk=meeting_id)).data)


@extend_schema_view(
    post=extend_schema(
        operation_id="meetings_join", tags=TAGS, summary="Join a meeting: participant, assigned MC, meeting token",
        parameters=[MEETING_REF], request=JoinRequest,
        description=(
            "201 with a new participant. A signed-in user who is still present in the meeting (a reload) gets 200 "
            "with their open participant and a fresh token instead, and takes no second seat. A replay with the "
            "same Idempotency-Key answers the stored participant and MC with a freshly issued meeting token. "
            "In a meeting with a waiting room the participant may join as `waiting` (no seat, `waiting_room` claim "
            "in its token) until the host admits it. 403: banned by the host, or the meeting is locked; 409: no "
            "seat (or guest seat) left."
        ),
        responses={
            201: JoinResponse, 200: JoinResponse,
            **error_responses(400, 401, 403, 404, 409, 410, 413, 415, 422, 429, 503),
        },
    )
)
class MeetingJoinView(JoinReplayMixin, ApiView):
    required_scopes = {"POST": MEETINGS_WRITE}
    # meeting_join admits only an active user, checked in the join's own statement.
    user_checked_by_handler = True

    def rate_limits(self, request: Request) -> list[RateLimit]:
        return join_limits(principal=self.principal.identifier, ip_address=client_ip(request))

    def post(self, request: Request, meeting_ref: str) -> Response:
        data = join_request(request.data, guest=False)
        result = meeting_join(
            meeting_ref=meeting_ref, user_id=self.principal.user_id, region=data["region"],
            display_name=data.get("display_name"), client_version=data.get("client_version"),
            ip_address=peer_ip(request),
            user_agent=_user_agent(request),
        )
        return _join_response(result)


@extend_schema_view(
    post=extend_schema(
        operation_id="meetings_guest_token", tags=TAGS, auth=[],
        summary="Join as a guest (meetings with allow_guests on and require_auth off)",
        parameters=[MEETING_REF], request=GuestTokenRequest,
        description=(
            "Idempotency-Key is kept per client address and display name, so guests behind one NAT never share a "
            "key; a replay answers the stored participant with a freshly issued meeting token."
        ),
        responses={201: JoinResponse, **error_responses(400, 403, 404, 409, 410, 413, 415, 422, 429, 503)},
    )
)
class GuestTokenView(JoinReplayMixin, ApiView):
    public = True
    authentication_classes = []

    def idempotency_principal(self, request: Request) -> str:
        data = request.data
        name = data.get("display_name") if isinstance(data, dict) else None
        return guest_principal(ip_address=client_ip(request), display_name=name if isinstance(name, str) else "")

    def rate_limits(self, request: Request) -> list[RateLimit]:
        return join_limits(principal=None, ip_address=client_ip(request))

    def post(self, request: Request, meeting_ref: str) -> Response:
        data = join_request(request.data, guest=True)
        result = meeting_join(
            meeting_ref=meeting_ref, user=None, region=data["region"], display_name=data["display_name"],
            client_version=data.get("client_version"),
            ip_address=peer_ip(request),
            user_agent=_user_agent(request),
        )
        return _join_response(result)


@extend_schema_view(
    get=extend_schema(
        operation_id="meetings_participants_list", tags=TAGS,
        summary="Admitted participants, present and past (the host, and participants while present)",
        responses={200: ParticipantSerializer(many=True), **error_responses(401, 403, 404)},
    )
)
class ParticipantListView(ApiListView):
    required_scopes = {"GET": MEETINGS_READ}
    serializer_class = ParticipantSerializer
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet[MeetingParticipant]:
        if getattr(self, "swagger_fake_view", False):
            return MeetingParticipant.objects.none()
        return selectors.participants_for_meeting(
            meeting_id=self.kwargs["meeting_id"], viewer_id=self.principal.user.pk
        )


@extend_schema_view(
    get=extend_schema(
        operation_id="meetings_participants_retrieve", tags=TAGS,
        summary="A participant (the meeting's host, or the user it is): the Location of a join's 201",
        responses={200: ParticipantSerializer, **error_responses(401, 403, 404)},
    )
)
class ParticipantDetailView(ApiView):
    required_scopes = {"GET": MEETINGS_READ}

    def get(self, request: Request, meeting_id: uuid.UUID, participant_id: uuid.UUID) -> Response:
        participant = selectors.participant_visible_to(
            meeting_id=meeting_id, participant_id=participant_id, viewer_id=self.principal.user.pk
        )
        return Response(ParticipantSerializer(participant).data)


@extend_schema_view(
    post=extend_schema(
        operation_id="meetings_participants_leave", tags=TAGS,
        summary="Close a participant's session (the participant itself, or the host)", request=LeaveRequest,
        responses={200: ParticipantSerializer, **error_responses(400, 401, 403, 404, 409, 413, 415, 422)},
    )
)
class ParticipantLeaveView(ApiView):
    required_scopes = {"POST": MEETINGS_WRITE}

    def post(self, request: Request, meeting_id: uuid.UUID, participant_id: uuid.UUID) -> Response:
        data = _validated(LeaveRequest, request)
        participant = participant_leave(
            meeting_id=meeting_id, participant_id=participant_id, actor_user_id=self.principal.user.pk,
            leave_reason=data["leave_reason"],
        )
        return Response(ParticipantSerializer(participant).data)


@extend_schema_view(
    get=extend_schema(
        operation_id="meetings_waiting_list", tags=TAGS,
        summary="The waiting room: who waits to be admitted (host only)",
        responses={200: ParticipantSerializer(many=True), **error_responses(401, 403, 404)},
    )
)
class WaitingListView(ApiListView):
    required_scopes = {"GET": MEETINGS_READ}
    serializer_class = ParticipantSerializer
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet[MeetingParticipant]:
        if getattr(self, "swagger_fake_view", False):
            return MeetingParticipant.objects.none()
        return selectors.participants_waiting(meeting_id=self.kwargs["meeting_id"], viewer_id=self.principal.user.pk)


@extend_schema_view(
    post=extend_schema(
        operation_id="meetings_participants_admit", tags=TAGS,
        summary="Admit a waiting participant: it takes a seat (host only)", request=None,
        responses={200: ParticipantSerializer, **error_responses(401, 403, 404, 409, 410, 422)},
    )
)
class ParticipantAdmitView(ApiView):
    required_scopes = {"POST": MEETINGS_WRITE}

    def post(self, request: Request, meeting_id: uuid.UUID, participant_id: uuid.UUID) -> Response:
        _validated(EmptyRequest, request)
        participant = participant_admit(
            meeting_id=meeting_id, participant_id=participant_id, actor_user_id=self.principal.user.pk
        )
        return Response(ParticipantSerializer(participant).data)


@extend_schema_view(
    post=extend_schema(
        operation_id="meetings_participants_deny", tags=TAGS,
        summary="Turn a waiting participant away, banning it if asked (host only)", request=DenyRequest,
        responses={200: ParticipantSerializer, **error_responses(400, 401, 403, 404, 409, 410, 413, 415, 422)},
    )
)
class ParticipantDenyView(ApiView):
    required_scopes = {"POST": MEETINGS_WRITE}

    def post(self, request: Request, meeting_id: uuid.UUID, participant_id: uuid.UUID) -> Response:
        data = _validated(DenyRequest, request)
        participant = participant_deny(
            meeting_id=meeting_id, participant_id=participant_id, actor_user_id=self.principal.user.pk,
            ban=data["ban"],
        )
        return Response(ParticipantSerializer(participant).data)


@extend_schema_view(
    get=extend_schema(
        operation_id="meetings_bans_list", tags=TAGS, summary="Who the host removed and may not rejoin (host only)",
        responses={200: BanSerializer(many=True), **error_responses(401, 403, 404)},
    )
)
class BanListView(ApiListView):
    required_scopes = {"GET": MEETINGS_READ}
    serializer_class = BanSerializer
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet[MeetingBan]:
        if getattr(self, "swagger_fake_view", False):
            return MeetingBan.objects.none()
        return selectors.meeting_bans(meeting_id=self.kwargs["meeting_id"], viewer_id=self.principal.user.pk)


@extend_schema_view(
    delete=extend_schema(
        operation_id="meetings_bans_lift", tags=TAGS,
        summary="Lift a ban: that participant may join again (host only)",
        responses={204: None, **error_responses(401, 403, 404, 410)},
    )
)
class BanDetailView(ApiView):
    required_scopes = {"DELETE": MEETINGS_WRITE}

    def delete(self, request: Request, meeting_id: uuid.UUID, ban_id: uuid.UUID) -> Response:
        meeting_ban_lift(meeting_id=meeting_id, ban_id=ban_id, actor_user_id=self.principal.user.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    get=extend_schema(
        operation_id="meetings_recordings_list", tags=["recordings"], summary="A meeting's recordings (host only)",
        responses={200: RecordingSerializer(many=True), **error_responses(400, 401, 403, 404)},
    ),
    post=extend_schema(
        operation_id="meetings_recordings_start", tags=["recordings"],
        summary="Start recording (host only; allow_recording must be on)", request=None,
        responses={201: RecordingSerializer, **error_responses(401, 403, 404, 409, 410, 422, 429)},
    ),
)
class MeetingRecordingsView(CreatedLocation, ApiListView):
    required_scopes = {"GET": RECORDINGS_READ, "POST": RECORDINGS_WRITE}
    serializer_class = RecordingSerializer
    filterset_class = RecordingFilter

    def rate_limits(self, request: Request) -> list[RateLimit]:
        if request.method == "POST":
            return recording_write_limits(principal=self.principal.identifier)
        return []

    def get_queryset(self) -> QuerySet[Recording]:
        if getattr(self, "swagger_fake_view", False):
            return Recording.objects.none()
        return selectors.recordings_visible_to(meeting_id=self.kwargs["meeting_id"], viewer_id=self.principal.user.pk)

    def post(self, request: Request, meeting_id: uuid.UUID) -> Response:
        _validated(EmptyRequest, request)
        recording = recording_start(meeting_id=meeting_id, actor_user_id=self.principal.user.pk)
        return Response(RecordingSerializer(recording).data, status=status.HTTP_201_CREATED)

    def created_location(self, body: dict[str, Any]) -> str | None:
        return reverse("recording-detail", args=[body["recording_id"]])


@extend_schema_view(
    get=extend_schema(
        operation_id="recordings_retrieve", tags=["recordings"], summary="A recording (meeting host only)",
        responses={200: RecordingSerializer, **error_responses(401, 403, 404)},
    ),
    patch=extend_schema(
        operation_id="recordings_update", tags=["recordings"],
        summary="Advance a recording's status and record its file details", request=RecordingUpdateRequest,
        responses={200: RecordingSerializer, **error_responses(400, 401, 403, 404, 409, 413, 415, 429)},
    ),
)
class RecordingDetailView(ApiView):
    required_scopes = {"GET": RECORDINGS_READ, "PATCH": RECORDINGS_WRITE}

    def rate_limits(self, request: Request) -> list[RateLimit]:
        if request.method == "PATCH":
            return recording_write_limits(principal=self.principal.identifier)
        return []

    def get(self, request: Request, recording_id: uuid.UUID) -> Response:
        recording = selectors.recording_visible_to(recording_id=recording_id, viewer_id=self.principal.user.pk)
        return Response(RecordingSerializer(recording).data)

    def patch(self, request: Request, recording_id: uuid.UUID) -> Response:
        data = _validated(RecordingUpdateRequest, request)
        recording = recording_update(recording_id=recording_id, actor_user_id=self.principal.user.pk, **data)
        return Response(RecordingSerializer(recording).data)


def _share_response(request: Request, shared: SharedRecording) -> Response:
    body = {
        **RecordingSerializer(shared.recording).data,
        "access_token": shared.token,
        "share_url": request.build_absolute_uri(reverse("recording-shared", args=[shared.token])),
    }
    return Response(body, headers=NO_STORE)


class RecordingShareTokenMixin:
    """Share and rotate answer the link's token once. The idempotency ledger stores the response without it
    (only its hash exists anywhere), so a replay answers the same share with access_token and share_url null:
    rotate again for a new token."""

    idempotency_redact: ClassVar[tuple[str, ...]] = ("access_token", "share_url")


# The share answer carries a secret; the public link's answer must not outlive an unshare or a rotation in a
# cache between the client and us.
NO_STORE = {"Cache-Control": "no-store"}
SHARE_DESCRIPTION = (
    "The token (and the link) is in this response only: the server keeps its SHA-256 hash, never the token. "
    "A replay with the same Idempotency-Key answers access_token and share_url null."
)


@extend_schema_view(
    post=extend_schema(
        operation_id="recordings_share", tags=["recordings"],
        summary="Share a ready recording: a public link that ends (host only)", description=SHARE_DESCRIPTION,
        request=RecordingShareRequest,
        responses={200: RecordingShareResponse, **error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429)},
    )
)
class RecordingShareView(RecordingShareTokenMixin, ApiView):
    required_scopes = {"POST": RECORDINGS_WRITE}

    def rate_limits(self, request: Request) -> list[RateLimit]:
        return recording_write_limits(principal=self.principal.identifier)

    def post(self, request: Request, recording_id: uuid.UUID) -> Response:
        data = _validated(RecordingShareRequest, request)
        shared = recording_share(
            recording_id=recording_id, actor_user_id=self.principal.user.pk,
            expires_in_seconds=data.get("expires_in_seconds"),
        )
        return _share_response(request, shared)


@extend_schema_view(
    post=extend_schema(
        operation_id="recordings_share_rotate", tags=["recordings"],
        summary="Replace a shared recording's link: the old token stops working at once (host only)",
        description=SHARE_DESCRIPTION, request=RecordingShareRequest,
        responses={200: RecordingShareResponse, **error_responses(400, 401, 403, 404, 409, 413, 415, 422, 429)},
    )
)
class RecordingShareRotateView(RecordingShareTokenMixin, ApiView):
    required_scopes = {"POST": RECORDINGS_WRITE}

    def rate_limits(self, request: Request) -> list[RateLimit]:
        return recording_write_limits(principal=self.principal.identifier)

    def post(self, request: Request, recording_id: uuid.UUID) -> Response:
        data = _validated(RecordingShareRequest, request)
        shared = recording_share_rotate(
            recording_id=recording_id, actor_user_id=self.principal.user.pk,
            expires_in_seconds=data.get("expires_in_seconds"),
        )
        return _share_response(request, shared)


@extend_schema_view(
    post=extend_schema(
        operation_id="recordings_unshare", tags=["recordings"],
        summary="End a recording's share link at once (host only; nothing to end is not an error)", request=None,
        responses={200: RecordingSerializer, **error_responses(401, 403, 404, 409, 413, 415, 422, 429)},
    )
)
class RecordingUnshareView(ApiView):
    required_scopes = {"POST": RECORDINGS_WRITE}

    def rate_limits(self, request: Request) -> list[RateLimit]:
        return recording_write_limits(principal=self.principal.identifier)

    def post(self, request: Request, recording_id: uuid.UUID) -> Response:
        _validated(EmptyRequest, request)
        recording = recording_unshare(recording_id=recording_id, actor_user_id=self.principal.user.pk)
        return Response(RecordingSerializer(recording).data)


@extend_schema_view(
    get=extend_schema(
        operation_id="recordings_shared_retrieve", tags=["recordings"], auth=[],
        summary="Open a shared recording by its link's token (no sign-in)",
        description="An unknown, expired, unshared or replaced token answers the same 404.",
        responses={200: SharedRecordingSerializer, **error_responses(404)},
    )
)
class SharedRecordingView(ApiView):
    public = True
    authentication_classes = []

    def get(self, request: Request, token: str) -> Response:
        recording = selectors.recording_by_share_token(token=token)
        return Response(SharedRecordingSerializer(recording).data, headers=NO_STORE)
