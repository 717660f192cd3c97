"""Base classes of every API view: JSON only, our authenticators and scope check, rate limits, and
Idempotency-Key handling around POST handlers (see darktower.api.idempotency)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils.module_loading import import_string
from rest_framework import exceptions, generics
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.renderers import BaseRenderer, JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.settings import api_settings
from rest_framework.throttling import BaseThrottle
from rest_framework.views import APIView

from darktower.api.idempotency import (
    HEADER,
    IdempotencyClaim,
    StoredResponse,
    idempotency_begin,
    idempotency_complete,
    idempotency_release,
)
from darktower.api.parsers import StrictJSONParser
from darktower.api.permissions import ScopePermission
from darktower.api.principal import Principal
from darktower.api.ratelimit import RateLimit, ratelimit_hit
from darktower.api.schema import ApiAutoSchema
from darktower.client_address import client_address
from darktower.errors import Unauthenticated

REPLAYED_HEADER = "Idempotent-Replayed"
# Accept headers that DRF's negotiation answers with its JSON renderer as plain application/json: what nearly every
# client sends (or nothing). Any other header goes through the whole negotiation, which parses every media range.
_TAKES_PLAIN_JSON = frozenset({"", "*/*", "application/json"})


def client_ip(request: HttpRequest | Request) -> str:
    """The client's address for rate-limit keys and principals (darktower.client_address: REMOTE_ADDR, or behind
    a proxy in TRUSTED_PROXIES the right-most untrusted X-Forwarded-For hop); "unknown" for a unix-socket peer."""
    return client_address(request.META) or "unknown"


def peer_ip(request: HttpRequest | Request) -> str | None:
    """The same client address for INET columns (audit, participants); None when it is not an IP address
    (a unix-socket peer)."""
    return client_address(request.META)


class ApiPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 200


class ApiView(APIView):
    schema = ApiAutoSchema()
    # Named in settings (the accounts app's classes): the API plumbing imports no app.
    authentication_classes = [import_string(path) for path in settings.API_AUTHENTICATION_CLASSES]
    permission_classes = [ScopePermission]
    parser_classes = [StrictJSONParser]
    renderer_classes = [JSONRenderer]
    throttle_classes: Sequence[type[BaseThrottle]] = []

    # Method -> scope (None: any authenticated caller). See ScopePermission.
    required_scopes: ClassVar[dict[str, str | None]] = {}
    # "user" (bearer token) and/or "api_key"; None accepts both.
    principal_kinds: ClassVar[frozenset[str] | None] = None
    public = False
    # POST handlers honour Idempotency-Key.
    idempotent = True
    # Top-level response fields stored as null in the idempotency ledger (secrets shown once).
    idempotency_redact: ClassVar[tuple[str, ...]] = ()
    # The handler's service refuses a user gone or inactive itself (in its own statement), so a bearer token's
    # user that authentication left unread (Principal.user_unread) is not read before the handler. It still is
    # before an Idempotency-Key's claim or replay, and before any error answer (handle_exception), so that
    # such a user gets authentication's 401 wherever it got one before.
    user_checked_by_handler: ClassVar[bool] = False

    def rate_limits(self, request: Request) -> list[RateLimit]:
        return []

    def rate_limit_fallback(self, request: Request) -> Callable[[], None] | None:
        """What to do when Redis is unreachable; None fails open."""
        return None

    @property
    def principal(self) -> Principal:
        principal = self.request.auth
        assert isinstance(principal, Principal), "view reached without an authenticated principal"
        return principal

    def idempotency_principal(self, request: Request) -> str:
        if isinstance(request.auth, Principal):
            return request.auth.identifier
        return f"ip:{client_ip(request)}"

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        # Only requests a handler will serve are counted. OPTIONS (metadata) and a method the view lacks (a 405)
        # pass the permission check without a caller, so limits that name the caller could not be computed.
        assert request.method is not None  # Django's handler sets it from the request line
        counted = request.method != "OPTIONS" and hasattr(self, request.method.lower())
        limits = self.rate_limits(request) if counted else []
        principal = request.auth if isinstance(request.auth, Principal) else None
        if principal is not None and principal.revocation is not None:
            # The credential's revocation lookup rides on the limits' round trip: a revoked one counts nowhere.
            revoked = ratelimit_hit(limits, on_unavailable=self.rate_limit_fallback(request),
                                    unless_exists=principal.revocation.key)
            principal.settle_revocation(revoked)
        else:
            ratelimit_hit(limits, on_unavailable=self.rate_limit_fallback(request))

    def perform_content_negotiation(self, request: Request, force: bool = False) -> tuple[BaseRenderer, str]:
        if (
            self.renderer_classes == [JSONRenderer]
            and request.META.get("HTTP_ACCEPT", "") in _TAKES_PLAIN_JSON
            and self.format_kwarg is None
            and api_settings.URL_FORMAT_OVERRIDE not in request.query_params
        ):
            return JSONRenderer(), JSONRenderer.media_type
        return super().perform_content_negotiation(request, force)

    def replayed_body(self, request: Request, status_code: int, body: Any) -> Any:
        """The body to answer an idempotent replay with, from the stored one (whose `idempotency_redact`
        fields are null). Views that redact a secret they can safely give again override this."""
        return body

    def stored_body(self, response: Response) -> bytes | None:
        """The JSON text the idempotency ledger keeps of `response`: its body, `idempotency_redact` fields null."""
        data = response.data
        if data is None:
            return None
        if isinstance(data, dict) and any(name in data for name in self.idempotency_redact):
            data = {**data, **{name: None for name in self.idempotency_redact if name in data}}
        return bytes(JSONRenderer().render(data))

    def handle_exception(self, exc: Exception) -> Response:
        """DRF's, after settling what authentication left to later (a bearer token's revocation lookup, its user):
        a revoked token, or a user gone or inactive, is answered authentication's 401 rather than whatever refusal
        came first (a 400, a 403, a 404, a 429)."""
        principal = _authenticated(self.request)
        if principal is not None and not isinstance(exc, _CALLER_REFUSALS):
            try:
                principal.check_revocation()
                if principal.user_unread:
                    principal.user  # noqa: B018 -- reads the user, refusing one gone or inactive
            except exceptions.AuthenticationFailed as refused:
                exc = refused
        return super().handle_exception(exc)

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Response:
        """DRF's dispatch, with the POST handler wrapped in the idempotency protocol."""
        self.args = args
        self.kwargs = kwargs
        drf_request = self.initialize_request(request, *args, **kwargs)
        self.request = drf_request
        self.headers = self.default_response_headers
        claim: IdempotencyClaim | None = None
        try:
            self.initial(drf_request, *args, **kwargs)
            assert drf_request.method is not None  # Django's handler sets it from the request line
            method = drf_request.method.lower()
            handler = getattr(self, method, self.http_method_not_allowed)
            if method not in self.http_method_names:
                handler = self.http_method_not_allowed
            key = drf_request.headers.get(HEADER)
            principal = drf_request.auth
            if (isinstance(principal, Principal) and principal.user_unread
                    and (key is not None or not self.user_checked_by_handler)):
                principal.user  # noqa: B018 -- reads the user, refusing one gone or inactive (401)
            if self.idempotent and drf_request.method == "POST" and key is not None:
                outcome = idempotency_begin(
                    principal=self.idempotency_principal(drf_request), key=key, method=drf_request.method,
                    path=drf_request.path, body=request.body,
                )
                if isinstance(outcome, StoredResponse):
                    body = self.replayed_body(drf_request, outcome.status, outcome.body)
                    response = Response(body, status=outcome.status, headers={REPLAYED_HEADER: "true"})
                    self.response = self.finalize_response(drf_request, response, *args, **kwargs)
                    return self.response
                claim = outcome
            if claim is None:
                response = handler(drf_request, *args, **kwargs)
            else:
                with transaction.atomic():
                    response = handler(drf_request, *args, **kwargs)
                    completed = response.status_code < 500
                    if completed:
                        idempotency_complete(claim, status=response.status_code, body=self.stored_body(response))
                # Only once the commit succeeded: a failing commit (a deferred constraint) must still release.
                if completed:
                    claim = None
        except Exception as exc:
            try:
                response = self.handle_exception(exc)
            except BaseException:
                if claim is not None:
                    idempotency_release(claim)
                raise
        if claim is not None:
            if response.status_code < 500:
                idempotency_complete(claim, status=response.status_code, body=self.stored_body(response))
            else:
                idempotency_release(claim)
        self.response = self.finalize_response(drf_request, response, *args, **kwargs)
        return self.response


# Refusals of the caller itself: nothing to read first.
_CALLER_REFUSALS = (exceptions.AuthenticationFailed, exceptions.NotAuthenticated, Unauthenticated)


def _authenticated(request: Request | None) -> Principal | None:
    """The request's principal once authentication has run; None before (reading `request.auth` would run it,
    and an error answered before authentication, such as a 406, must not depend on the credentials)."""
    auth = getattr(request, "_auth", None)
    return auth if isinstance(auth, Principal) else None


class ApiListView(ApiView, generics.ListAPIView):
    pagination_class = ApiPagination
