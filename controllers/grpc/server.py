"""Assembly of the gRPC server: our two services behind the call metrics and the service guard, health checking
and reflection, on a grpc.aio server (controllers.grpc.guard says what runs on its loop and what in its worker
threads, controllers.grpc.streams how a stream of beats is served).

The management command `grpcserver` runs it; the tests start the very same server on a loopback port.

Transport: TLS when GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE are set, mutual TLS (a client certificate signed by
GRPC_TLS_CLIENT_CA_FILE required on every connection) when that is set too. Service tokens are bearer
credentials: in plaintext anyone on the path can take one, so with DEBUG off the command refuses a plaintext
bind on any address but loopback (or a unix socket) unless GRPC_ALLOW_PLAINTEXT says a TLS-terminating proxy or
a private link carries the traffic (`plaintext_refusal`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import threading
from collections.abc import Coroutine, Iterable, Mapping, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

import grpc
import uvloop
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import DatabaseError, close_old_connections, connection
from grpc_health.v1 import _async as health_async
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2_grpc

from controllers.grpc.admission import Admission
from controllers.grpc.batching import BatchWrite, BatchWriter
from controllers.grpc.guard import (
    EXEMPT_SERVICES,
    GLOBAL_CONTROLLER_SERVICE,
    MEDIA_HANDLER_REGISTRY_SERVICE,
    Behaviour,
    InMemory,
    MethodGuard,
    guarded_unary,
)
from controllers.grpc.services import (
    BATCHED_METHODS,
    BEAT_STREAMS,
    CONTROLLER_SERVICER,
    IN_MEMORY_METHODS,
    MediaHandlerRegistryService,
)
from controllers.grpc.streams import BeatStream, OpenStream, guarded_stream
from controllers.heartbeats import RECORDERS
from dark_tower.internal.v1 import internal_pb2_grpc
from darktower.metrics import CallMetrics, TallyPublisher

logger = logging.getLogger(__name__)

SERVICE_NAMES = (GLOBAL_CONTROLLER_SERVICE, MEDIA_HANDLER_REGISTRY_SERVICE)
# "" is the whole server in grpc.health.v1.
HEALTH_NAMES = ("", *SERVICE_NAMES)
DB_CHECK_INTERVAL_SECONDS = 2.0
SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Room for an 8 KiB token and the rest: an over-long token must reach token_verify and be refused there
# (UNAUTHENTICATED), not be cut off by the transport's default 8 KiB metadata limit.
MAX_METADATA_BYTES = 16 * 1024
# Calls and streams that may wait for the event loop to take them in (see _build).
MAX_PENDING_CALLS = 100_000
# How long a thread waits for the event loop to do something it asked for (set a health status).
LOOP_CALL_TIMEOUT = 10.0

T = TypeVar("T")


class ServiceGuard:
    """Wraps every method handler of our services (WrappedHandlers calls `wrap` once per method): each unary
    method behind its guard (controllers.grpc.guard.MethodGuard: authenticate, rate-limit, serve, map errors), each
    stream of beats behind its beats' guards (controllers.grpc.streams).

    The servicers block (Django's ORM); each unary call runs in a worker thread of `executor`, except the calls
    of `in_memory` methods that need no I/O, answered on the event loop, and the calls of `batched` methods whose
    token is known, written by their method's writer with the others waiting (controllers.grpc.batching). A
    `streams` method is a stream of beats, each served as its unary method's call would be. Health checking and
    reflection pass through.
    """

    def __init__(self, executor: futures.Executor, in_memory: Mapping[str, InMemory] | None = None,
                 streams: Mapping[str, BeatStream] | None = None,
                 batched: Mapping[str, BatchWrite] | None = None) -> None:
        self._executor = executor
        self._in_memory = dict(in_memory or {})
        self._streams = dict(streams or {})
        self._open_streams: set[OpenStream] = set()
        self.writers = {method: BatchWriter(method.rpartition("/")[2], write)
                        for method, write in (batched or {}).items()}
        # The calls waiting for `executor` or a writer, all methods together.
        self.admission = Admission()

    def _guard(self, method: str, behaviour: Behaviour) -> MethodGuard:
        return MethodGuard(method, behaviour, self._executor, self._in_memory.get(method), self.admission,
                           self.writers.get(method))

    def stop_writers(self) -> None:
        """Wait for the writes in progress; call once the server takes no more calls."""
        for writer in self.writers.values():
            writer.stop()

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler | None:
        """The guarded handler of `method`; None (UNIMPLEMENTED) for a method this guard cannot guard."""
        if method.lstrip("/").partition("/")[0] in EXEMPT_SERVICES:
            return handler
        if method in self._streams and handler.stream_stream is not None:
            spec = self._streams[method]
            guards = {kind: self._guard(path, behaviour) for kind, (path, behaviour) in spec.beats.items()}
            return guarded_stream(method, spec, guards, handler, self._open_streams)
        if handler.unary_unary is None:
            # Fail closed: a streaming method added later answers UNIMPLEMENTED until it is guarded here too.
            return None
        return guarded_unary(self._guard(method, handler.unary_unary), handler)

    def end_streams(self) -> int:
        """A stopping server's open streams end with UNAVAILABLE: at once when waiting for a beat, else right
        after answering the beat in hand; their clients reconnect, to another server. Call on the event loop,
        after the server stopped taking new calls. Returns how many were open."""
        for state in list(self._open_streams):
            if not state.closing:
                state.closing = True
                if state.waiting:
                    state.task.cancel()
        return len(self._open_streams)


@dataclass(frozen=True)
class ServerTls:
    """The server's certificate chain and private key (PEM), and the CA that client certificates must chain to
    (None: no client certificate asked for)."""

    certificate_chain: bytes = field(repr=False)
    private_key: bytes = field(repr=False)
    client_ca: bytes | None = field(default=None, repr=False)

    def credentials(self) -> grpc.ServerCredentials:
        return grpc.ssl_server_credentials(
            [(self.private_key, self.certificate_chain)], root_certificates=self.client_ca,
            require_client_auth=self.client_ca is not None,
        )


def _read_pem(setting: str, path: str) -> bytes:
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise ImproperlyConfigured(f"cannot read {setting} ({path}): {exc.strerror or exc}") from None


def server_tls_from_settings() -> ServerTls | None:
    """The TLS material GRPC_TLS_* name, read now; None for plaintext. ImproperlyConfigured when the settings
    are incomplete or a file cannot be read."""
    cert, key = settings.GRPC_TLS_CERT_FILE or "", settings.GRPC_TLS_KEY_FILE or ""
    client_ca = settings.GRPC_TLS_CLIENT_CA_FILE or ""
    if bool(cert) != bool(key):
        raise ImproperlyConfigured("GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE go together: set both or neither")
    if client_ca and not cert:
        raise ImproperlyConfigured("GRPC_TLS_CLIENT_CA_FILE needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE too")
    if not cert:
        return None
    return ServerTls(
        certificate_chain=_read_pem("GRPC_TLS_CERT_FILE", cert), private_key=_read_pem("GRPC_TLS_KEY_FILE", key),
        client_ca=_read_pem("GRPC_TLS_CLIENT_CA_FILE", client_ca) if client_ca else None,
    )


def _is_local(bind: str) -> bool:
    """Whether `bind` (HOST:PORT, [V6]:PORT or unix:PATH) is reachable from this machine only."""
    if bind.startswith(("unix:", "unix-abstract:")):
        return True
    host = bind.rpartition(":")[0].strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a hostname or an empty host (every address): possibly public


def plaintext_refusal(*, bind: str, tls: ServerTls | None, debug: bool, allow_plaintext: bool) -> str | None:
    """Why the server must not start on `bind` without TLS, or None when it may."""
    if tls is not None or debug or allow_plaintext or _is_local(bind):
        return None
    return (
        f"refusing to serve plaintext gRPC on {bind} with DEBUG off: service tokens would cross the network in the "
        "clear; set GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE, bind a loopback address, or set "
        "GRPC_ALLOW_PLAINTEXT=1 when a TLS-terminating proxy or a private link carries the traffic"
    )


class HandlerWrapper(Protocol):
    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler | None:
        """The handler that serves `method` in place of `handler`; None: the method is not served
        (UNIMPLEMENTED)."""


# WrappedHandlers keeps None for a method its wrappers refuse: a lookup's "not kept yet" is this instead.
_NOT_KEPT: Any = object()


class WrappedHandlers(grpc.GenericRpcHandler):
    """The server's one generic handler: the services registered on it (it takes the generated
    add_*Servicer_to_server calls as a server would), each method's handler wrapped by `wrappers` (the first
    outermost) on its first call and kept.

    What grpc.aio server interceptors are for, without their cost per call: grpc.aio awaits every interceptor
    on every call to find its handler (a coroutine per interceptor per call, and what they await), where this
    is a dict lookup.
    """

    def __init__(self, wrappers: Sequence[HandlerWrapper]) -> None:
        self._wrappers = tuple(reversed(wrappers))
        self._generic: list[grpc.GenericRpcHandler] = []
        self._methods: dict[str, grpc.RpcMethodHandler | None] = {}

    def add_generic_rpc_handlers(self, generic_rpc_handlers: Iterable[grpc.GenericRpcHandler]) -> None:
        self._generic.extend(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str,
                                       method_handlers: Mapping[str, grpc.RpcMethodHandler]) -> None:
        """The generated code registers each method here as well; its generic handler already serves them."""

    def service(self, handler_call_details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        method: str = handler_call_details.method
        kept = self._methods.get(method, _NOT_KEPT)
        if kept is not _NOT_KEPT:
            return kept
        handler = next(
            (found for generic in self._generic if (found := generic.service(handler_call_details)) is not None),
            None,
        )
        if handler is None:
            return None  # UNIMPLEMENTED; not kept, so that random method names cannot grow the dict
        wrapped: grpc.RpcMethodHandler | None = handler
        for wrapper in self._wrappers:
            if wrapped is None:
                break
            wrapped = wrapper.wrap(method, wrapped)
        self._methods[method] = wrapped
        return wrapped


class DatabaseWatch:
    """Reports NOT_SERVING while the database does not answer `SELECT 1`, SERVING again once it does."""

    def __init__(self, health_status: Health, interval: float = DB_CHECK_INTERVAL_SECONDS) -> None:
        self.health = health_status
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="grpc-db-watch", daemon=True)
        self.serving: bool | None = None

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(self.interval + 5)

    def check(self) -> bool:
        close_old_connections()
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            return True
        except DatabaseError:
            connection.close()
            return False

    def _run(self) -> None:
        while True:
            serving = self.check()
            if serving != self.serving:
                if not serving:
                    logger.warning("database unreachable: health NOT_SERVING")
                elif self.serving is not None:
                    logger.warning("database reachable again: health SERVING")
                self.serving = serving
                status = SERVING if serving else NOT_SERVING
                for name in HEALTH_NAMES:
                    self.health.set(name, status)
            if self._stop.wait(self.interval):
                break
        connection.close()


class Health:
    """The server's health statuses (grpc.health.v1), set from any thread: the servicer lives on the loop."""

    def __init__(self, servicer: health_async.HealthServicer, loop: asyncio.AbstractEventLoop) -> None:
        self.servicer = servicer
        self._loop = loop

    def set(self, name: str, status: int) -> None:
        asyncio.run_coroutine_threadsafe(self.servicer.set(name, status), self._loop).result(LOOP_CALL_TIMEOUT)

    def enter_graceful_shutdown(self) -> None:
        asyncio.run_coroutine_threadsafe(self.servicer.enter_graceful_shutdown(), self._loop).result(
            LOOP_CALL_TIMEOUT
        )


class GrpcServer:
    """A grpc.aio server on an event loop of its own thread, its worker threads for the blocking servicers,
    and the database watch. Used from ordinary threads: start(), stop(), `port`, `health`."""

    def __init__(self, *, bind: str, workers: int, reuse_port: bool, tls: ServerTls | None = None) -> None:
        # uvloop (libuv) instead of asyncio's default selector loop: every call crosses the loop several times
        # (grpc.aio hands each completion from its poller thread to the loop), and uvloop's dispatch costs less
        # CPU per crossing.
        self._loop = uvloop.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="grpc-loop", daemon=True)
        self._thread.start()
        self.executor = futures.ThreadPoolExecutor(max_workers=workers, thread_name_prefix="grpc-worker")
        try:
            self.server, self.port, servicer = self._call(self._build(bind, reuse_port, tls))
        except BaseException:
            self._close_loop()
            raise
        self.health = Health(servicer, self._loop)
        self.watch = DatabaseWatch(self.health)
        self.tallies = TallyPublisher()
        self._stopped = False

    def _call(self, coroutine: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result()

    async def _build(self, bind: str, reuse_port: bool,
                     tls: ServerTls | None) -> tuple[grpc.aio.Server, int, health_async.HealthServicer]:
        options = [
            ("grpc.max_receive_message_length", settings.GRPC_MAX_RECEIVE_MESSAGE_BYTES),
            ("grpc.max_metadata_size", MAX_METADATA_BYTES),
            # grpcio turns SO_REUSEPORT on by default on Linux: a second server on the same port would bind
            # silently and take half the connections. Only several processes of one deployment may share a port.
            ("grpc.so_reuseport", 1 if reuse_port else 0),
            # grpc core cancels calls and streams that arrive faster than the event loop takes them in once more
            # than 1,000 wait (3,000: refused at once). A fleet reconnecting its heartbeat streams after a
            # restart is such a burst (20,000 MCs: 20,000 streams within seconds); the loop takes them all in.
            ("grpc.server.max_pending_requests", MAX_PENDING_CALLS),
            ("grpc.server.max_pending_requests_hard_limit", MAX_PENDING_CALLS),
        ]
        self.service_guard = ServiceGuard(self.executor, IN_MEMORY_METHODS, BEAT_STREAMS, BATCHED_METHODS)
        # Metrics outermost, so that they see the status code the guard ended a call with.
        handlers = WrappedHandlers([CallMetrics(), self.service_guard])
        internal_pb2_grpc.add_GlobalControllerServiceServicer_to_server(CONTROLLER_SERVICER, handlers)
        internal_pb2_grpc.add_MediaHandlerRegistryServiceServicer_to_server(
            MediaHandlerRegistryService.as_servicer(), handlers
        )
        health_servicer = health_async.HealthServicer()
        for name in HEALTH_NAMES:
            await health_servicer.set(name, NOT_SERVING)
        # Typed to take a server; it calls only the two registration methods that WrappedHandlers has.
        health_pb2_grpc.add_HealthServicer_to_server(health_servicer, handlers)  # type: ignore[arg-type]
        # What reflection.enable_server_reflection registers on a grpc.aio server, registered on `handlers`.
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            reflection.aio.ReflectionServicer((*SERVICE_NAMES, health.SERVICE_NAME, reflection.SERVICE_NAME)),
            handlers,
        )
        server = grpc.aio.server(handlers=[handlers], options=options)
        try:
            port = server.add_secure_port(bind, tls.credentials()) if tls else server.add_insecure_port(bind)
        except RuntimeError as exc:
            raise OSError(f"cannot bind gRPC server to {bind}") from exc
        if port == 0:
            raise OSError(f"cannot bind gRPC server to {bind}")
        return server, port, health_servicer

    def start(self) -> None:
        self.tallies.start()
        self._call(self.server.start())
        self.watch.start()

    def stop(self, grace: float | None = None) -> None:
        """NOT_SERVING at once, refuse new calls, let in-flight ones finish within `grace`, then write the
        heartbeats still in memory."""
        if self._stopped:
            return
        self._stopped = True
        grace = settings.GRPC_SHUTDOWN_GRACE_SECONDS if grace is None else grace
        self.health.enter_graceful_shutdown()
        self._call(self._stop_serving(grace))
        self.watch.stop()
        self._close_loop()
        self.tallies.stop()
        for recorder in RECORDERS:
            written = recorder.stop()
            if written:
                logger.info("wrote %d pending %s beats at shutdown", written, recorder.kind.target_type)

    async def _stop_serving(self, grace: float) -> None:
        stopping = asyncio.ensure_future(self.server.stop(grace))
        await asyncio.sleep(0)  # new calls are refused from here on
        # Heartbeat streams would last the whole grace, then be cancelled: they end now, so that their MCs
        # reconnect to another server at once.
        ended = self.service_guard.end_streams()
        if ended:
            logger.info("ending %d heartbeat streams", ended)
        await stopping

    def _close_loop(self) -> None:
        self.executor.shutdown(wait=True)
        # The writers resolve their calls on the loop: they stop before it does.
        if hasattr(self, "service_guard"):
            self.service_guard.stop_writers()
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()


def build_server(*, bind: str, workers: int, reuse_port: bool = False, tls: ServerTls | None = None) -> GrpcServer:
    """A server bound to `bind` (port 0 picks a free one), over TLS when `tls` is given, not yet started."""
    return GrpcServer(bind=bind, workers=workers, reuse_port=reuse_port, tls=tls)
