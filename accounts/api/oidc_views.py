"""Sign-in with an OpenID Connect provider over REST, and the user's provider links. Thin: parse, call one
service, render.

The flow runs in a browser: the client opens `start`, the provider signs the user in and sends the browser to
`callback`, which answers with our user token exactly as password login does (same rate limits, audit rows,
error shape). State, nonce and the PKCE verifier live in the browser's Django session between the two.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponseRedirect
from django.urls import reverse
from drf_spectacular.utils import extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.api.serializers import AccessTokenResponse, OAuthProviderLinkSerializer, OidcProviderResponse
from accounts.api.views import USER_TOKEN_ONLY, access_token_response
from accounts.models import OAuthProvider
from accounts.oidc import oidc_providers, oidc_start
from accounts.services.oidc import oauth_provider_unlink, oauth_providers_for_user, user_oidc_sign_in
from accounts.services.users import login_throttle_fallback
from darktower.api.ratelimit import login_address_limit, ratelimit_reserve
from darktower.api.schema import error_responses
from darktower.api.views import ApiListView, ApiView, client_ip, peer_ip
from darktower.errors import ProviderUnavailable


@extend_schema_view(
    get=extend_schema(
        operation_id="auth_oidc_providers", tags=["auth"], auth=[], summary="Identity providers you may sign in with",
        responses={200: OidcProviderResponse(many=True)},
    )
)
class OidcProvidersView(ApiView):
    public = True
    authentication_classes = []

    def get(self, request: Request) -> Response:
        body = [
            {"name": config.name, "display_name": config.display_name,
             "start_url": request.build_absolute_uri(reverse("auth-oidc-start", args=[config.name])),
             "callback_url": request.build_absolute_uri(reverse("auth-oidc-callback", args=[config.name]))}
            for config in oidc_providers()
        ]
        return Response(OidcProviderResponse(body, many=True).data)


@extend_schema_view(
    get=extend_schema(
        operation_id="auth_oidc_start", tags=["auth"], auth=[], summary="Start signing in with a provider",
        description="Redirects the browser to the provider (authorization code flow with PKCE, state and nonce).",
        responses={302: None, **error_responses(404, 503)},
    )
)
class OidcStartView(ApiView):
    public = True
    authentication_classes = []

    def get(self, request: Request, provider: str) -> HttpResponseRedirect:
        response = oidc_start(
            request._request, provider=provider,
            redirect_uri=request.build_absolute_uri(reverse("auth-oidc-callback", args=[provider])),
        )
        # Each start carries a fresh state and nonce: a cached redirect would replay a used one.
        response["Cache-Control"] = "no-store"
        return response


@extend_schema_view(
    get=extend_schema(
        operation_id="auth_oidc_callback", tags=["auth"], auth=[], summary="Finish signing in with a provider",
        description=(
            "Where the provider sends the browser back. Answers as POST /api/v1/auth/login does: an EdDSA user "
            "access token. A first sign-in creates the account, or links an existing one with the same email when "
            "the provider says the email is verified. Failed sign-ins count against the login limit per address."
        ),
        responses={200: AccessTokenResponse, **error_responses(401, 404, 409, 429, 503)},
    )
)
class OidcCallbackView(ApiView):
    public = True
    authentication_classes = []

    def get(self, request: Request, provider: str) -> Response:
        address = peer_ip(request)
        # As password login: the attempt takes its unit first and a success gives it back. The email is unknown
        # until the provider answers, so only the per-address limit applies.
        refund = ratelimit_reserve(
            [login_address_limit(ip_address=client_ip(request))],
            on_unavailable=lambda: login_throttle_fallback(email_hash_hex="", ip_address=address),
        )
        try:
            result = user_oidc_sign_in(
                request=request._request, provider=provider, door="api", ip_address=address,
                user_agent=request.META.get("HTTP_USER_AGENT", "")[:1000] or None,
            )
        except ProviderUnavailable:
            refund()  # the provider's outage is not a failed login
            raise
        refund()
        assert result.token is not None  # the API door always gets one
        return access_token_response(result.token)


@extend_schema_view(
    get=extend_schema(
        operation_id="me_providers_list", tags=["auth"], summary="Your links to identity providers (never tokens)",
        responses={200: OAuthProviderLinkSerializer(many=True), **error_responses(401, 403)},
    )
)
class OAuthProviderListView(ApiListView):
    required_scopes = {"GET": None}
    principal_kinds = USER_TOKEN_ONLY
    serializer_class = OAuthProviderLinkSerializer
    filter_backends: list[Any] = []

    def get_queryset(self) -> QuerySet[OAuthProvider]:
        if getattr(self, "swagger_fake_view", False):
            return OAuthProvider.objects.none()
        return oauth_providers_for_user(self.principal.user.pk)


@extend_schema_view(
    delete=extend_schema(
        operation_id="me_providers_unlink", tags=["auth"], summary="Unlink an identity provider",
        description="Refused (409) when it is your last way in: no password and no other provider.",
        responses={204: None, **error_responses(401, 403, 404, 409)},
    )
)
class OAuthProviderDetailView(ApiView):
    required_scopes = {"DELETE": None}
    principal_kinds = USER_TOKEN_ONLY

    def delete(self, request: Request, link_id: int) -> Response:
        oauth_provider_unlink(user_id=self.principal.user.pk, link_id=link_id)
        return Response(status=status.HTTP_204_NO_CONTENT)
