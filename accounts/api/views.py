"""Login, logout, /me and API keys over REST. Thin: parse, call one service, render."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from django.http import StreamingHttpResponse
from django.urls import reverse
from django.utils import timezone
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.serializers import (
    AccessTokenResponse,
    ApiKeyCreatedResponse,
    ApiKeyCreateRequest,
    ApiKeySerializer,
    EraseMeRequest,
    LoginRequest,
    MeResponse,
)
from accounts.models import ApiKey
from accounts.services.api_keys import api_key_create, api_key_revoke, api_keys_for_user
from accounts.services.personal_data import VIA_API, recent_authentication_check, user_erase, user_export
from accounts.services.users import email_hash, login_throttle_fallback, user_login, user_logout
from accounts.tokens import IssuedToken
from darktower.api.location import CreatedLocation
from darktower.api.ratelimit import (
    RateLimit,
    api_key_create_limits,
    erase_limits,
    export_limits,
    login_limits,
    ratelimit_reserve,
)
from darktower.api.schema import error_responses
from darktower.api.serializers import EmptyRequest
from darktower.api.views import ApiListView, ApiView, client_ip, peer_ip
from darktower.errors import NotFound, PermissionDenied

USER_TOKEN_ONLY = frozenset({"user"})


def access_token_response(token: IssuedToken) -> Response:
    """Our user token as both sign-in doors (password and provider) answer it; never cached."""
    body = {"access_token": token.token, "token_type": "Bearer", "expires_in": token.expires_in, "scope": token.scope}
    return Response(AccessTokenResponse(body).data, headers={"Cache-Control": "no-store"})


@extend_schema_view(
    post=extend_schema(
        operation_id="auth_login", tags=["auth"], auth=[], summary="Sign in with email and password",
        description=(
            "Returns an EdDSA user access token (audience darktower-api) carrying the user's scopes. Failed logins "
            "are limited per account and address, per account and per address; a successful login counts nowhere. "
            "Idempotency-Key is not honoured here: replaying would mean storing access tokens, and a repeated login "
            "creates nothing."
        ),
        request=LoginRequest, responses={200: AccessTokenResponse, **error_responses(400, 401, 413, 415, 429)},
    )
)
class LoginView(ApiView):
    public = True
    authentication_classes = []
    idempotent = False

    def post(self, request: Request) -> Response:
        serializer = LoginRequest(data=request.data)
        serializer.is_valid(raise_exception=True)
        email = serializer.validated_data["email"]
        hashed = email_hash(email)
        address = peer_ip(request)
        # Only failures count: the attempt takes its unit before the password is checked (so concurrent guesses
        # cannot pass a limit together) and a successful login gives it back.
        refund = ratelimit_reserve(
            login_limits(ip_address=client_ip(request), email_hash=hashed),
            on_unavailable=lambda: login_throttle_fallback(email_hash_hex=hashed, ip_address=address),
        )
        result = user_login(
            email=email, password=serializer.validated_data["password"],
            ip_address=address, user_agent=request.META.get("HTTP_USER_AGENT", "")[:1000] or None,
        )
        refund()
        return access_token_response(result.token)


@extend_schema_view(
    post=extend_schema(
        operation_id="auth_logout", tags=["auth"], summary="Revoke the bearer token of this request",
        request=None, responses={204: None, **error_responses(400, 401, 403, 422)},
    )
)
class LogoutView(ApiView):
    required_scopes = {"POST": None}
    principal_kinds = USER_TOKEN_ONLY

    def post(self, request: Request) -> Response:
        EmptyRequest(data=request.data).is_valid(raise_exception=True)
        user_logout(claims=self.principal.claims, user_id=self.principal.user.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    get=extend_schema(
        operation_id="me", tags=["auth"], summary="The authenticated user and the scopes of this credential",
        responses={200: MeResponse, **error_responses(401)},
    ),
    delete=extend_schema(
        operation_id="me_erase", tags=["auth"], summary="Erase your account and your personal data",
        description=(
            "Ends the meetings you host, deletes their recordings, your API keys, linked providers and account, "
            "and anonymises your participations in other meetings; audit rows stay without anything that names "
            "you. Needs a bearer token (not an API key) and a recent sign-in: your `password` in the body, or a "
            "token issued within ERASURE_REAUTHENTICATION_SECONDS (sign in again first). Attempts are rate "
            "limited per user (429 with Retry-After). Afterwards the token names nobody: a repeat is a 401."
        ),
        request=EraseMeRequest, responses={204: None, **error_responses(400, 401, 403, 413, 415, 429)},
    ),
)
class MeView(ApiView):
    required_scopes = {"GET": None, "DELETE": None}

    def rate_limits(self, request: Request) -> list[RateLimit]:
        if request.method == "DELETE":
            return erase_limits(principal=self.principal.identifier)
        return []

    def get(self, request: Request) -> Response:
        return Response(MeResponse(self.principal.user, context={"principal": self.principal}).data)

    def delete(self, request: Request) -> Response:
        if self.principal.kind not in USER_TOKEN_ONLY:
            raise PermissionDenied("Erasing an account needs a bearer token from signing in, not an API key.")
        serializer = EraseMeRequest(data=request.data)
        serializer.is_valid(raise_exception=True)
        user = self.principal.user
        recent_authentication_check(
            user=user, password=serializer.validated_data.get("password"),
            token_issued_at=self.principal.claims.issued_at, now=timezone.now(),
        )
        user_erase(user_id=user.pk, actor_user_id=user.pk, via=VIA_API)
        return Response(status=status.HTTP_204_NO_CONTENT)


@extend_schema_view(
    get=extend_schema(
        operation_id="me_export", tags=["auth"], summary="Your personal data, as one JSON document",
        description=(
            "Your profile, linked providers (never their tokens), API keys (never their secrets), the meetings you "
            "host, your participations, your meetings' recordings (metadata) and the audit events you acted in. "
            "Streamed as it is read. Needs a bearer token (not an API key); rate limited per user (429 with "
            "Retry-After)."
        ),
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="The document (format darktower-personal-data/1)."),
            **error_responses(401, 403, 429),
        },
    )
)
class MeExportView(ApiView):
    required_scopes = {"GET": None}
    # A key must not take its user's data away: whoever steals one could otherwise read everything.
    principal_kinds = USER_TOKEN_ONLY

    def rate_limits(self, request: Request) -> list[RateLimit]:
        return export_limits(principal=self.principal.identifier)

    def get(self, request: Request) -> StreamingHttpResponse:
        user_id = self.principal.user.pk
        pieces = user_export(user_id=user_id, actor_user_id=user_id, via=VIA_API)
        response = StreamingHttpResponse(pieces, content_type="application/json")
        response["Content-Disposition"] = 'attachment; filename="darktower-personal-data.json"'
        response["Cache-Control"] = "no-store"
        return response


@extend_schema_view(
    get=extend_schema(
        operation_id="api_keys_list", tags=["api-keys"], summary="Your API keys (never their secrets)",
        responses={200: ApiKeySerializer(many=True), **error_responses(401, 403)},
    ),
    post=extend_schema(
        operation_id="api_keys_create", tags=["api-keys"], summary="Create an API key; the key is shown once",
        description=(
            "A replay of this request (same Idempotency-Key) answers with `key` null: it is never stored. A user "
            "holds at most API_KEYS_MAX_ACTIVE_PER_USER active keys (409 `conflict` above it: revoke one first), "
            "and creation is rate limited per user (429 with Retry-After)."
        ),
        request=ApiKeyCreateRequest,
        responses={201: ApiKeyCreatedResponse, **error_responses(400, 401, 403, 409, 413, 415, 422, 429)},
    ),
)
class ApiKeyListCreateView(CreatedLocation, ApiListView):
    required_scopes = {"GET": None, "POST": None}
    # A key must not mint keys: whoever steals one could otherwise keep access after it is revoked.
    principal_kinds = USER_TOKEN_ONLY
    serializer_class = ApiKeySerializer
    filter_backends: list[Any] = []
    idempotency_redact = ("key",)

    def rate_limits(self, request: Request) -> list[RateLimit]:
        if request.method == "POST":
            return api_key_create_limits(principal=self.principal.identifier)
        return []

    def get_queryset(self) -> QuerySet[ApiKey]:
        if getattr(self, "swagger_fake_view", False):
            return ApiKey.objects.none()
        return api_keys_for_user(self.principal.user.pk)

    def post(self, request: Request) -> Response:
        serializer = ApiKeyCreateRequest(data=request.data)
        serializer.is_valid(raise_exception=True)
        created = api_key_create(user=self.principal.user, **serializer.validated_data)
        api_key = api_keys_for_user(self.principal.user.pk).get(pk=created.api_key.pk)
        # Not a model field: the one-time key rides on the instance for the response serializer only.
        api_key.key = created.raw_key  # type: ignore[attr-defined]
        return Response(
            ApiKeyCreatedResponse(api_key).data, status=status.HTTP_201_CREATED, headers={"Cache-Control": "no-store"}
        )

    def created_location(self, body: dict[str, Any]) -> str | None:
        return reverse("api-key-detail", args=[body["key_id"]])


@extend_schema_view(
    get=extend_schema(
        operation_id="api_keys_retrieve", tags=["api-keys"], summary="One of your API keys (never its secret)",
        responses={200: ApiKeySerializer, **error_responses(401, 403, 404)},
    ),
    delete=extend_schema(
        operation_id="api_keys_revoke", tags=["api-keys"], summary="Revoke an API key",
        responses={204: None, **error_responses(401, 403, 404)},
    )
)
class ApiKeyDetailView(ApiView):
    required_scopes = {"GET": None, "DELETE": None}
    principal_kinds = USER_TOKEN_ONLY

    def get(self, request: Request, key_id: uuid.UUID) -> Response:
        api_key = api_keys_for_user(self.principal.user.pk).filter(pk=key_id).first()
        if api_key is None:
            raise NotFound("No such API key.")
        return Response(ApiKeySerializer(api_key).data)

    def delete(self, request: Request, key_id: uuid.UUID) -> Response:
        api_key_revoke(key_id=key_id, actor_user_id=self.principal.user.pk)
        return Response(status=status.HTTP_204_NO_CONTENT)
