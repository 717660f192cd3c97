"""Login, logout, /me and API keys over REST. Thin: parse, call one service, render."""

from __future__ import annotations

import uuid
from typing import Any

from django.db.models import QuerySet
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.serializers import (
    AccessTokenResponse,
    ApiKeyCreatedResponse,
    ApiKeyCreateRequest,
    ApiKeySerializer,
    LoginRequest,
    MeResponse,
)
from accounts.models import ApiKey
from accounts.services.api_keys import api_key_create, api_key_revoke, api_keys_for_user
from accounts.services.users import email_hash, login_throttle_fallback, user_login, user_logout
from darktower.api.location import CreatedLocation
from darktower.api.ratelimit import RateLimit, api_key_create_limits, login_limits, ratelimit_reserve
from darktower.api.schema import error_responses
from darktower.api.serializers import EmptyRequest
from darktower.api.views import ApiListView, ApiView, client_ip, peer_ip
from darktower.errors import NotFound

USER_TOKEN_ONLY = frozenset({"user"})


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
        token = result.token
        body = {"access_token": token.token, "token_type": "Bearer", "expires_in": token.expires_in,
                "scope": token.scope}
        return Response(AccessTokenResponse(body).data, headers={"Cache-Control": "no-store"})


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
    )
)
class MeView(ApiView):
    required_scopes = {"GET": None}

    def get(self, request: Request) -> Response:
        return Response(MeResponse(self.principal.user, context={"principal": self.principal}).data)


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
