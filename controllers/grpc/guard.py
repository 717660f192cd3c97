"""The one gRPC front door: authentication, scope check, rate limit and error mapping.

Every call of our services (everything but health checking and reflection) must carry `authorization: Bearer
<jwt>` metadata with a service token for JWT_SERVICE_AUDIENCE (accounts.tokens.token_verify: size, EdDSA only,
known kid, signature, exp/nbf, iss, aud, revocation) holding the service's scope. After authentication comes
the method's rate limit (controllers.grpc.ratelimit), keyed by the token's subject.

The server is a grpc.aio server: one event loop takes every call. Servicers block (Django's ORM), so a call
runs in a worker thread, except a heartbeat that needs no I/O at all (a token this process verified, a
member it knows, a beat that changes no state): that one is answered on the loop, with the same checks, which
is what lets one process take a fleet's heartbeats. A registration or a beat that needs the database, with a token
this process verified, waits for its method's writer instead of a worker thread (controllers.grpc.batching), so
that a fleet restarting is written a batch per transaction. Database connections in the workers are
django-grpc-framework's business (Service closes stale ones around each call, as Django does around a
request); token checks touch the database only to reload signing keys, rarely.

Streams of beats (StreamHeartbeats) are served in controllers.grpc.streams, each beat through the guard of its unary
method here; controllers.grpc.server.ServiceGuard puts every method behind its guard.

Errors are mapped here and nowhere else: darktower.errors to their status codes with their (fixed, short)
messages (a rate limit's RESOURCE_EXHAUSTED with `retry-after` trailing metadata, in seconds); an unreachable
database to UNAVAILABLE; anything else to INTERNAL with a generic message, logged with its traceback here, so
that no SQL, stack trace or token text ever reaches a client.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Callable, Collection
from concurrent.futures import Executor
from typing import Any, NoReturn

import grpc
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections
from google.protobuf.message import DecodeError

from accounts.services.service_tokens import ORIGINAL_GC_SCOPE, SERVICE_TYPE_OF_SCOPE
from accounts.tokens import TokenClaims, token_current_cached, token_verify, token_verify_cached
from controllers.grpc.admission import Admission
from controllers.grpc.batching import BatchWriter
from controllers.grpc.ratelimit import limit_for
from darktower import errors
from darktower.conf import hot_setting
from darktower.metrics import RATE_LIMIT_REJECTIONS

logger = logging.getLogger(__name__)

GLOBAL_CONTROLLER_SERVICE = "dark_tower.internal.v1.GlobalControllerService"
MEDIA_HANDLER_REGISTRY_SERVICE = "dark_tower.internal.v1.MediaHandlerRegistryService"

# Calls refused because too many wait for a worker thread (controllers.grpc.admission).
BUSY_REJECTIONS = RATE_LIMIT_REJECTIONS.labels("grpc:busy")

# The scope a token needs for each of our services: a token for one service does not open the other.
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

# Read by iteration only: a grpc.aio call's metadata, or a tuple of pairs.
Metadata = Collection[tuple[str, str | bytes]]

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


def _bearer_token(metadata: Metadata) -> str:
    values = [value for key, value in metadata if key == "authorization"]
    if not values:
        raise errors.Unauthenticated("missing bearer token")
    if len(values) > 1 or not isinstance(values[0], str):
        raise errors.Unauthenticated("malformed authorization metadata")
    scheme, _, token = values[0].partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise errors.Unauthenticated("authorization must be a Bearer token")
    return token.strip()


def authenticate(metadata: Metadata, scope: str | None) -> TokenClaims:
    """The verified claims of the call's service token, which must hold `scope` (no scope: nobody may call)."""
    claims = token_verify(_bearer_token(metadata), audience=settings.JWT_SERVICE_AUDIENCE)
    _require_scope(claims, scope)
    return claims


def _require_scope(claims: TokenClaims, scope: str | None) -> None:
    """Our scope, or Dark Tower's rule for the same service: service.write.gc and the service_type of the
    members the service serves (a token we issue to a single-kind credential carries both)."""
    if scope is not None and (
        scope in claims.scopes
        or (claims.service_type == SERVICE_TYPE_OF_SCOPE.get(scope) and ORIGINAL_GC_SCOPE in claims.scopes)
    ):
        return
    raise errors.PermissionDenied(f"token lacks the {scope or 'required'} scope")


class Refused(Exception):
    """A call ended with a status other than OK: what the client gets (code, short details, trailing metadata)."""

    def __init__(self, code: grpc.StatusCode, details: str, trailing: tuple[tuple[str, str], ...] = ()) -> None:
        super().__init__(code, details)
        self.code, self.details, self.trailing = code, details, trailing


def refusal(method: str, exc: Exception) -> Refused:
    """What `exc`, raised while serving `method`, tells the client. Call it while handling `exc` (status_for
    logs tracebacks)."""
    trailing: tuple[tuple[str, str], ...] = ()
    if isinstance(exc, errors.Unauthenticated | errors.PermissionDenied):
        logger.info("grpc %s rejected: %s", method, exc.message)
    elif isinstance(exc, errors.Throttled):
        trailing = (("retry-after", str(exc.retry_after_seconds)),)
    code, details = status_for(exc, method)
    return Refused(code, details, trailing)


class WorkerContext:
    """The servicer context of a call served in a worker thread: what our servicers may use of it, without
    touching the event loop's context from another thread (abort raises Refused, which the loop turns into
    the call's status)."""

    def __init__(self, metadata: Metadata) -> None:
        self._metadata = tuple(metadata)

    def invocation_metadata(self) -> tuple[tuple[str, str | bytes], ...]:
        return self._metadata

    def abort(self, code: grpc.StatusCode, details: str = "") -> NoReturn:
        raise Refused(code, details)


# (request, the caller's client id) -> the answer, or None when the call needs I/O.
InMemory = Callable[[Any, str], Any]
Behaviour = Callable[[Any, Any], Any]
# The request of a call whose message bytes do not parse.
MALFORMED = object()


def tolerant(parse: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        # grpc.aio would end a call whose message does not parse with UNKNOWN and an error log; it is the
        # client's mistake: INVALID_ARGUMENT, after authentication like any other refusal.
        try:
            return parse(data) if parse is not None else data
        except DecodeError:
            return MALFORMED

    return deserialize


def _refuse_in_worker(method: str, exc: Exception) -> NoReturn:
    # The servicer, and with it django-grpc-framework's end-of-call connection handling, never runs: give back
    # the connection a signing-key lookup may have opened, as the end of a request does.
    close_old_connections()
    raise refusal(method, exc) from None


class MethodGuard:
    """One method of our services (`behaviour`, a blocking servicer method) behind authentication, the method's
    rate limit and error mapping. A method with an `in_memory` path is first tried on the event loop, without
    I/O: a cached token and a beat the recorder coalesces. A method with a `batch` writer hands it the calls that
    need the database once their token is known (cached); any other case, and every other method, runs in a
    worker thread of `executor`, so that nothing on the loop ever waits for the database or Redis."""

    def __init__(self, method: str, behaviour: Behaviour, executor: Executor, in_memory: InMemory | None,
                 admission: Admission | None = None, batch: BatchWriter | None = None) -> None:
        self.method = method
        self.scope = SERVICE_SCOPES.get(method.lstrip("/").partition("/")[0])
        self._behaviour = behaviour
        self._executor = executor
        self._in_memory = in_memory
        self._limit = limit_for(method)
        # Shared by the guards of one server: the calls waiting for its workers or writers (controllers.grpc.admission).
        self._admission = admission or Admission()
        # The method's writer (controllers.grpc.batching): a call that needs the database and whose token is known
        # waits there, without a worker thread.
        self._batch = batch

    async def serve(self, request: Any, metadata: Metadata, opened: TokenClaims | None = None) -> Any:
        """The answer to `request`; Refused with what the client gets instead. `opened`: the claims the call's
        stream was opened with (authenticate), checked for expiry and revocation instead of verified again."""
        claims = None
        if self._in_memory is not None:
            try:
                claims, answer = self._serve_in_memory(request, metadata, opened)
            except Exception as exc:  # mapped by refusal; never shown to the client
                raise refusal(self.method, exc) from None
            if answer is not None:
                return answer
        elif self._batch is not None and request is not MALFORMED:
            try:
                claims = self._cached_claims(metadata)
            except Exception as exc:  # mapped by refusal; never shown to the client
                raise refusal(self.method, exc) from None
        if claims is not None and self._batch is not None:
            return await self._serve_batched(request, claims)
        # A beat that comes here without claims needs only its token checked again (a revocation lookup gone
        # stale) most of the time: a running member's, not to be refused because a restarting fleet fills the queue.
        exempt = self._in_memory is not None and claims is None
        retry_after = self._admission.enter(limit=None if exempt else hot_setting("GRPC_MAX_QUEUED_CALLS"))
        if retry_after:
            BUSY_REJECTIONS.inc()
            raise refusal(self.method, errors.Throttled("server busy; retry later", retry_after_seconds=retry_after))
        try:
            return await asyncio.get_running_loop().run_in_executor(
                self._executor, self._serve_in_worker, request, metadata, claims
            )
        finally:
            self._admission.leave()

    async def _serve_batched(self, request: Any, claims: TokenClaims) -> Any:
        """The call written by its method's writer, with the other calls waiting for it; admitted like a call
        waiting for a worker. A beat has passed its rate limit on the loop; a registration's (a Redis round trip)
        is the write's to count."""
        assert self._batch is not None
        retry_after = self._admission.enter(limit=hot_setting("GRPC_MAX_QUEUED_CALLS"))
        if retry_after:
            BUSY_REJECTIONS.inc()
            raise refusal(self.method, errors.Throttled("server busy; retry later", retry_after_seconds=retry_after))
        try:
            return await self._batch.submit(request, claims.subject)
        except Exception as exc:  # mapped by refusal; never shown to the client
            raise refusal(self.method, exc) from None
        finally:
            self._admission.leave()

    async def authenticate(self, metadata: Metadata) -> TokenClaims:
        """The call's claims, holding the method's scope (on the loop when the token is cached); else Refused."""
        try:
            claims = self._cached_claims(metadata)
        except Exception as exc:  # mapped by refusal; never shown to the client
            raise refusal(self.method, exc) from None
        if claims is not None:
            return claims
        return await asyncio.get_running_loop().run_in_executor(
            self._executor, self._authenticate_in_worker, metadata
        )

    def _cached_claims(self, metadata: Metadata) -> TokenClaims | None:
        """The call's claims holding the method's scope when that needs no I/O; None when it does."""
        claims = token_verify_cached(_bearer_token(metadata), audience=hot_setting("JWT_SERVICE_AUDIENCE"))
        if claims is not None:
            _require_scope(claims, self.scope)
        return claims

    def _authenticate_in_worker(self, metadata: Metadata) -> TokenClaims:
        try:
            claims = authenticate(metadata, self.scope)
        except Exception as exc:  # mapped by refusal; never shown to the client
            _refuse_in_worker(self.method, exc)
        close_old_connections()
        return claims

    def _serve_in_memory(self, request: Any, metadata: Metadata,
                         opened: TokenClaims | None) -> tuple[TokenClaims | None, Any]:
        """(claims, answer): (None, None) when the token needs I/O to verify, (claims, None) when the call
        does. The claims returned have passed the scope and the rate limit already."""
        assert self._in_memory is not None
        if request is MALFORMED:
            return None, None
        claims: TokenClaims | None
        if opened is not None:
            # The stream's token held the scope when it opened; only expiry and revocation can change.
            if not token_current_cached(opened):
                return None, None
            claims = opened
        else:
            claims = self._cached_claims(metadata)
            if claims is None:
                return None, None
        if self._limit is not None:
            self._limit(claims.subject, request)
        return claims, self._in_memory(request, claims.subject)

    def _serve_in_worker(self, request: Any, metadata: Metadata,
                         claims: TokenClaims | None) -> Any:
        context = WorkerContext(metadata)
        try:
            if claims is None:
                claims = authenticate(metadata, self.scope)
                if request is MALFORMED:
                    raise errors.InvalidInput("malformed request message")
                if self._limit is not None:
                    self._limit(claims.subject, request)
        except Exception as exc:  # mapped by refusal; never shown to the client
            _refuse_in_worker(self.method, exc)
        token = _claims.set(claims)
        try:
            return self._behaviour(request, context)
        except Refused:
            raise
        except Exception as exc:  # mapped and logged in status_for; never shown to the client
            raise refusal(self.method, exc) from None
        finally:
            _claims.reset(token)


async def call_end(context: grpc.aio.ServicerContext, refused: Refused) -> NoReturn:
    if refused.trailing:
        context.set_trailing_metadata(refused.trailing)
    await context.abort(refused.code, refused.details)
    raise AssertionError("unreachable: abort raises")


def guarded_unary(guard: MethodGuard, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    async def guarded(request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await guard.serve(request, context.invocation_metadata() or ())
        except Refused as refused:
            await call_end(context, refused)

    return grpc.unary_unary_rpc_method_handler(
        guarded, request_deserializer=tolerant(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )


