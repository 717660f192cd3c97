"""The one gRPC front door: authentication, scope check, rate limit and error mapping.

Every call of our services (everything but health checking and reflection) must carry `authorization: Bearer
<jwt>` metadata with a service token for JWT_SERVICE_AUDIENCE (accounts.tokens.token_verify: size, EdDSA only,
known kid, signature, exp/nbf, iss, aud, revocation) holding the service's scope. The work happens in the
worker thread that runs the call, not in `intercept_service`, which grpcio runs on its polling thread.
Database connections are django-grpc-framework's business (Service closes stale ones around each call, as
Django does around a request); token checks touch the database only to reload signing keys, rarely.
After authentication comes the method's rate limit (controllers.grpc.ratelimit), keyed by the token's subject.

Errors are mapped here and nowhere else: darktower.errors to their status codes with their (fixed, short)
messages (a rate limit's RESOURCE_EXHAUSTED with `retry-after` trailing metadata, in seconds); an unreachable
database to UNAVAILABLE; anything else to INTERNAL with a generic message, logged with its traceback here, so
that no SQL, stack trace or token text ever reaches a client.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import grpc
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections

from accounts.tokens import TokenClaims, token_verify
from controllers.grpc.ratelimit import limit_for
from darktower import errors

logger = logging.getLogger(__name__)

GLOBAL_CONTROLLER_SERVICE = "dark_tower.internal.v1.GlobalControllerService"
MEDIA_HANDLER_REGISTRY_SERVICE = "dark_tower.internal.v1.MediaHandlerRegistryService"

# The scope a token needs for each of our services (seed 001, security review: "consider scope validation").
SERVICE_SCOPES = {
    GLOBAL_CONTROLLER_SERVICE: "mc:register",
    MEDIA_HANDLER_REGISTRY_SERVICE: "mh:register",
}
# Load balancers and tools must reach these without a token.
EXEMPT_SERVICES = frozenset({
    "grpc.health.v1.Health",
    "grpc.reflection.v1alpha.ServerReflection",
    "grpc.reflection.v1.ServerReflection",
})

_STATUS: tuple[tuple[type[Exception], grpc.StatusCode], ...] = (
    (errors.InvalidInput, grpc.StatusCode.INVALID_ARGUMENT),
    (errors.NotFound, grpc.StatusCode.NOT_FOUND),
    (errors.Gone, grpc.StatusCode.NOT_FOUND),
    (errors.Unauthenticated, grpc.StatusCode.UNAUTHENTICATED),
    (errors.PermissionDenied, grpc.StatusCode.PERMISSION_DENIED),
    (errors.Conflict, grpc.StatusCode.FAILED_PRECONDITION),
    (errors.NoCapacity, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.Throttled, grpc.StatusCode.RESOURCE_EXHAUSTED),
    (errors.DomainError, grpc.StatusCode.FAILED_PRECONDITION),
)

_claims: contextvars.ContextVar[TokenClaims | None] = contextvars.ContextVar("grpc_token_claims", default=None)


def current_client_id() -> str | None:
    """The service client (token subject) of the call this thread is serving, for audit rows."""
    claims = _claims.get()
    return claims.subject if claims else None


def status_for(exc: Exception, method: str) -> tuple[grpc.StatusCode, str]:
    """The status code and client-safe details for an exception raised while serving `method`."""
    for kind, code in _STATUS:
        if isinstance(exc, kind):
            return code, str(exc.message)  # type: ignore[attr-defined]
    if isinstance(exc, OperationalError | InterfaceError):
        logger.warning("grpc %s: database unavailable (%s)", method, type(exc).__name__)
        return grpc.StatusCode.UNAVAILABLE, "database unavailable; retry later"
    if isinstance(exc, DatabaseError):
        logger.exception("grpc %s: database error", method)
    else:
        logger.exception("grpc %s: unexpected error", method)
    return grpc.StatusCode.INTERNAL, "internal error"


def _bearer_token(metadata: Sequence[tuple[str, str | bytes]]) -> str:
    values = [value for key, value in metadata if key == "authorization"]
    if not values:
        raise errors.Unauthenticated("missing bearer token")
    if len(values) > 1 or not isinstance(values[0], str):
        raise errors.Unauthenticated("malformed authorization metadata")
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated("authorization must be a Bearer token")
    return token.strip()


def authenticate(metadata: Sequence[tuple[str, str | bytes]], scope: str | None) -> TokenClaims:
    """The verified claims of the call's service token, which must hold `scope` (no scope: nobody may call)."""
    claims = token_verify(_bearer_token(metadata), audience=settings.JWT_SERVICE_AUDIENCE)
    if scope is None or scope not in claims.scopes:
        raise errors.PermissionDenied(f"token lacks the {scope or 'required'} scope")
    return claims


def _abort(context: grpc.ServicerContext, method: str, exc: Exception) -> NoReturn:
    """End the call with the status `exc` maps to. Call it while handling `exc` (status_for logs tracebacks)."""
    if isinstance(exc, errors.Unauthenticated | errors.PermissionDenied):
        logger.info("grpc %s rejected: %s", method, exc.message)
    elif isinstance(exc, errors.Throttled):
        context.set_trailing_metadata((("retry-after", str(exc.retry_after_seconds)),))
    code, details = status_for(exc, method)
    context.abort(code, details)


def _guard(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    """`handler` behind authentication, the method's rate limit and error mapping."""
    service = method.lstrip("/").partition("/")[0]
    scope = SERVICE_SCOPES.get(service)
    limit = limit_for(method)
    behaviour = handler.unary_unary

    def guarded(request: Any, context: grpc.ServicerContext) -> Any:
        try:
            claims = authenticate(context.invocation_metadata(), scope)
            if limit is not None:
                limit(claims.subject, request)
        except Exception as exc:  # mapped in _abort; never shown to the client
            # The servicer, and with it django-grpc-framework's end-of-call connection handling, never runs:
            # give back the connection a signing-key lookup may have opened, as the end of a request does.
            close_old_connections()
            _abort(context, method, exc)
        token = _claims.set(claims)
        try:
            return behaviour(request, context)
        except Exception as exc:  # mapped and logged in status_for; never shown to the client
            _abort(context, method, exc)
        finally:
            _claims.reset(token)

    return grpc.unary_unary_rpc_method_handler(
        guarded, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


class ServiceInterceptor(grpc.ServerInterceptor):
    """Wraps every unary call of our services: authenticate, rate-limit, serve, map errors.

    grpcio calls `intercept_service` for every call on its polling thread; the guarded handler of each method
    is built once and reused (the per-call work, metadata included, happens in the worker thread).
    """

    def __init__(self) -> None:
        self._guarded: dict[str, grpc.RpcMethodHandler | None] = {}

    def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], grpc.RpcMethodHandler | None],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        if method in self._guarded:
            return self._guarded[method]
        handler = continuation(handler_call_details)
        if handler is None:
            return None  # UNIMPLEMENTED; not cached, so random method names cannot grow the cache
        if method.lstrip("/").partition("/")[0] in EXEMPT_SERVICES:
            guarded = handler
        elif handler.unary_unary is None:
            # Fail closed: a streaming method added later answers UNIMPLEMENTED until it is guarded here too.
            guarded = None
        else:
            guarded = _guard(method, handler)
        self._guarded[method] = guarded
        return guarded
