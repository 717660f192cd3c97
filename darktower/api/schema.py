"""OpenAPI pieces shared by every endpoint: the error shape, the standard error responses, and the
Idempotency-Key header on POST operations; and the Swagger UI view."""

from __future__ import annotations

from typing import Any

from drf_spectacular.openapi import AutoSchema
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from drf_spectacular.views import SpectacularSwaggerView
from rest_framework import serializers

from darktower.api.idempotency import HEADER, MAX_KEY_LENGTH

ErrorResponse = inline_serializer(
    name="ErrorResponse",
    fields={
        "error": inline_serializer(
            name="ErrorDetail",
            fields={
                "code": serializers.CharField(help_text="Stable machine-readable code, e.g. invalid, not_found."),
                "message": serializers.CharField(help_text="Human-readable explanation."),
                "fields": serializers.DictField(
                    child=serializers.ListField(child=serializers.CharField()),
                    help_text="Per-field problems for validation errors (dotted paths for nested fields).",
                ),
            },
        )
    },
)

ERROR_DESCRIPTIONS = {
    400: "Invalid input: malformed JSON, wrong types, unknown fields, bad values.",
    401: "Missing, invalid, expired or revoked credentials.",
    403: "The credential lacks the required scope, or the caller may not act on this resource.",
    404: "No such resource.",
    409: "Conflict with the resource's current state (or an Idempotency-Key still in progress).",
    410: "The meeting has ended.",
    413: "Request body too large.",
    415: "Request body is not application/json.",
    422: "The Idempotency-Key was already used for a different request.",
    429: "Rate limited; see the Retry-After header.",
    503: "No meeting controller available (code no_controller_available), a backing service down "
    "(service_unavailable) or a transaction the database aborted (retry); see Retry-After.",
}


def error_responses(*codes: int) -> dict[int, OpenApiResponse]:
    return {code: OpenApiResponse(ErrorResponse, description=ERROR_DESCRIPTIONS[code]) for code in codes}


class ApiAutoSchema(AutoSchema):
    """Documents the Idempotency-Key header on every POST that honours it."""

    def get_override_parameters(self) -> list[Any]:
        parameters = list(super().get_override_parameters())
        if self.method == "POST" and getattr(self.view, "idempotent", False):
            parameters.append(
                OpenApiParameter(
                    HEADER, OpenApiTypes.STR, OpenApiParameter.HEADER, required=False,
                    description=(
                        f"Up to {MAX_KEY_LENGTH} visible ASCII characters. The first response (status and body, "
                        "5xx excepted) is replayed for 24 hours to retries with the same key and body, with header "
                        "`Idempotent-Replayed: true`; a different body answers 422, a concurrent duplicate 409. "
                        "Secrets are never stored: a replay carries a freshly issued meeting token (join, "
                        "guest-token), `access_token` and `share_url` null for a recording share, and `key` null "
                        "for an API key."
                    ),
                )
            )
        return parameters


class SwaggerView(SpectacularSwaggerView):
    """Swagger UI at /api/docs/. GET and HEAD only: its HTML renderer has no page for DRF's OPTIONS metadata
    (which would be a 500), so OPTIONS answers 405 like any other method."""

    http_method_names = ["get", "head"]
