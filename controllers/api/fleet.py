"""The controller fleet for operators: listings (scope controllers:read), drain and undrain
(controllers:write, through controllers.services.operations, the same functions the admin uses)."""

from __future__ import annotations

from django.db.models import QuerySet
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.services.users import CONTROLLERS_READ, CONTROLLERS_WRITE
from controllers import selectors
from controllers.api.filters import ControllerFilter, MediaHandlerFilter
from controllers.api.serializers import ControllerSerializer, DrainRequest, MediaHandlerSerializer
from controllers.models import MediaHandler, MeetingController
from controllers.services.operations import controller_drain, controller_undrain
from darktower.api.schema import error_responses
from darktower.api.serializers import EmptyRequest
from darktower.api.views import ApiListView, ApiView
from darktower.errors import NotFound

TAGS = ["fleet"]


def _controller(controller_id: str) -> MeetingController:
    controller = selectors.controllers_listing().filter(pk=controller_id).first()
    if controller is None:
        raise NotFound("No such meeting controller.")
    return controller


@extend_schema_view(
    get=extend_schema(
        operation_id="controllers_list", tags=TAGS, summary="Meeting controllers, filterable by region and health",
        responses={200: ControllerSerializer(many=True), **error_responses(400, 401, 403)},
    )
)
class ControllerListView(ApiListView):
    required_scopes = {"GET": CONTROLLERS_READ}
    serializer_class = ControllerSerializer
    filterset_class = ControllerFilter

    def get_queryset(self) -> QuerySet[MeetingController]:
        return selectors.controllers_listing()


@extend_schema_view(
    get=extend_schema(
        operation_id="media_handlers_list", tags=TAGS, summary="Media handlers, filterable by region and health",
        responses={200: MediaHandlerSerializer(many=True), **error_responses(400, 401, 403)},
    )
)
class MediaHandlerListView(ApiListView):
    required_scopes = {"GET": CONTROLLERS_READ}
    serializer_class = MediaHandlerSerializer
    filterset_class = MediaHandlerFilter

    def get_queryset(self) -> QuerySet[MediaHandler]:
        return selectors.media_handlers_listing()


CONTROLLER_ID = OpenApiParameter("controller_id", str, OpenApiParameter.PATH, description="The controller's id.")


@extend_schema_view(
    post=extend_schema(
        operation_id="controllers_drain", tags=TAGS, parameters=[CONTROLLER_ID],
        summary="Drain a meeting controller: no new meetings; at the deadline the rest end or move to the target",
        request=DrainRequest,
        responses={200: ControllerSerializer, **error_responses(400, 401, 403, 404, 413, 415, 422)},
    )
)
class ControllerDrainView(ApiView):
    required_scopes = {"POST": CONTROLLERS_WRITE}

    def post(self, request: Request, controller_id: str) -> Response:
        serializer = DrainRequest(data=request.data)
        serializer.is_valid(raise_exception=True)
        controller_drain(controller_id=controller_id, actor_user_id=self.principal.user.pk, **serializer.validated_data)
        return Response(ControllerSerializer(_controller(controller_id)).data)


@extend_schema_view(
    post=extend_schema(
        operation_id="controllers_undrain", tags=TAGS, parameters=[CONTROLLER_ID],
        summary="Undrain a meeting controller: back to pending, placement resumes after its next good heartbeat",
        request=None, responses={200: ControllerSerializer, **error_responses(400, 401, 403, 404, 409, 422)},
    )
)
class ControllerUndrainView(ApiView):
    required_scopes = {"POST": CONTROLLERS_WRITE}

    def post(self, request: Request, controller_id: str) -> Response:
        EmptyRequest(data=request.data).is_valid(raise_exception=True)
        controller_undrain(controller_id=controller_id, actor_user_id=self.principal.user.pk)
        return Response(ControllerSerializer(_controller(controller_id)).data)
