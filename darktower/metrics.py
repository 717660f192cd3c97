"""Prometheus metrics: the metric objects, a gRPC handler wrapper, a Django middleware and GET /metrics.

Multiprocess-safe: when PROMETHEUS_MULTIPROC_DIR is set (gunicorn workers, several grpcserver processes,
Celery workers), prometheus-client keeps every process's samples in memory-mapped files in that directory and
`metrics_view` adds them up at scrape time. The directory must exist, be empty when the fleet of processes
starts, and be the same for all of them; a process manager that replaces workers should call
`prometheus_client.multiprocess.mark_process_dead(pid)` for each one that exits (gunicorn's `child_exit` hook).
prometheus-client reads the variable itself when it is first imported, so it must be in the environment, not
only in settings; settings.PROMETHEUS_MULTIPROC_DIR mirrors it for this module.

The gRPC server's per-call counts (calls, latency, stream messages, valid tokens) are tallied in memory and
published once a second (Tallies, below): a scrape shows them up to TALLY_PUBLISH_SECONDS late.

What the fleet looks like (controllers by region and health, outbox lag) is not counted by any process: a
collector asks the database at scrape time, so every process that serves /metrics reports the same truth.

Label values are bounded: gRPC methods only once the server knows them (an unknown method has no handler to
wrap), HTTP routes are URL patterns (`resolver_match.route`), never raw paths.
"""

from __future__ import annotations

import asyncio
import bisect
import inspect
import ipaddress
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, cast

import grpc
import redis
from django.conf import settings
from django.db import DatabaseError, connection
from django.http import Http404, HttpRequest, HttpResponse
from django.urls import path
from django.views.decorators.http import require_GET
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.multiprocess import MultiProcessCollector
from prometheus_client.registry import Collector

from darktower.client_address import client_address
from darktower.redis import redis_client
from darktower.registry import database_gauges

logger = logging.getLogger(__name__)

# The `_created` series (a timestamp per labelled child) doubles the series count and no dashboard reads it.
disable_created_metrics()

# Metrics this code records live here, not in prometheus-client's global registry: the scrape decides how to
# expose them (this registry in one process, the multiprocess files otherwise).
REGISTRY = CollectorRegistry(auto_describe=True)

# A heartbeat answers in well under a millisecond when coalesced; a registration or a sync write in a few.
GRPC_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
HTTP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
SWEEP_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)

GRPC_REQUESTS = Counter(
    "darktower_grpc_requests", "gRPC calls served, by full method name and status code",
    ["method", "code"], registry=REGISTRY,
)
GRPC_LATENCY = Histogram(
    "darktower_grpc_request_duration_seconds", "gRPC call latency in the server, by full method name",
    ["method"], buckets=GRPC_BUCKETS, registry=REGISTRY,
)
GRPC_STREAM_MESSAGES = Counter(
    "darktower_grpc_stream_messages", "Messages answered on gRPC streams (a heartbeat stream: beats acknowledged), "
    "by full method name", ["method"], registry=REGISTRY,
)
HTTP_REQUESTS = Counter(
    "darktower_http_requests", "HTTP requests, by method, URL pattern and status",
    ["method", "route", "status"], registry=REGISTRY,
)
HTTP_LATENCY = Histogram(
    "darktower_http_request_duration_seconds", "HTTP request latency, by method and URL pattern",
    ["method", "route"], buckets=HTTP_BUCKETS, registry=REGISTRY,
)
ASSIGNMENTS = Counter(
    "darktower_assignments", "Meeting assignment outcomes, by placement rule and outcome",
    ["rule", "outcome"], registry=REGISTRY,
)
MC_ASSIGN_CALLS = Counter(
    "darktower_mc_assign_calls", "AssignMeetingWithMh calls to MCs, by outcome (accepted, rejected, failed) and "
    "reason (the rejection reason or the gRPC status)", ["outcome", "reason"], registry=REGISTRY,
)
MC_ASSIGN_LATENCY = Histogram(
    "darktower_mc_assign_duration_seconds", "AssignMeetingWithMh call latency seen by the GC, by outcome",
    ["outcome"], buckets=GRPC_BUCKETS, registry=REGISTRY,
)
SWEEP_DURATION = Histogram(
    "darktower_sweep_duration_seconds", "Duration of one stale sweep (controllers_sweep_stale)",
    buckets=SWEEP_BUCKETS, registry=REGISTRY,
)
SWEEP_MARKED = Counter(
    "darktower_sweep_marked", "Members the stale sweep marked unhealthy, by target type",
    ["target_type"], registry=REGISTRY,
)
SWEEP_RUNS = Counter(
    "darktower_sweep_runs", "Stale sweeps, by result: swept, skipped (another sweep held the lock), sweep_gap (the "
    "first after a gap: nobody marked), cut_off (every region the guard can judge disrupted: nobody marked)",
    ["result"], registry=REGISTRY,
)
# Every result is exported from the start, at 0: an alert's increase() needs a sample before the first increment,
# and the one sweep that finds a gap is often the first sweep of a restarted worker.
for _result in ("swept", "skipped", "sweep_gap", "cut_off"):
    SWEEP_RUNS.labels(_result)
SWEEP_DISRUPTED_REGIONS = Counter(
    "darktower_sweep_disrupted_regions", "Sweeps that found a region disrupted (the guard marked nobody there), by "
    "target type and region", ["target_type", "region"], registry=REGISTRY,
)
HEARTBEAT_FLUSHES = Counter(
    "darktower_heartbeat_flushes", "Heartbeat flushes of a non-empty batch, by member kind and outcome: written, "
    "failed (database unreachable: the beats wait for the next flush), refused (the batch was dropped)",
    ["kind", "outcome"], registry=REGISTRY,
)
HEARTBEAT_FLUSH_DURATION = Histogram(
    "darktower_heartbeat_flush_duration_seconds", "Duration of one written heartbeat flush, by member kind",
    ["kind"], buckets=SWEEP_BUCKETS, registry=REGISTRY,
)
OUTBOX_POISONED = Counter(
    "darktower_outbox_poisoned", "Outbox events that reached OUTBOX_MAX_ATTEMPTS and will not be retried (poison)",
    registry=REGISTRY,
)
RATE_LIMIT_REJECTIONS = Counter(
    "darktower_rate_limit_rejections", "Requests refused by a rate limit, by endpoint",
    ["endpoint"], registry=REGISTRY,
)
TOKEN_VALIDATIONS = Counter(
    "darktower_token_validations", "Token validations, by outcome (valid, or the rejection's short reason)",
    ["outcome"], registry=REGISTRY,
)

UNMATCHED_ROUTE = "<unmatched>"


def multiprocess_dir() -> str | None:
    return getattr(settings, "PROMETHEUS_MULTIPROC_DIR", None) or None


# --- scrape-time collectors ---------------------------------------------------------------------------------

class DatabaseCollector(Collector):
    """The gauges the apps registered (darktower.registry.database_gauges: fleet size by kind, region and
    health; outbox lag), read from the database at scrape time.

    When the database does not answer, the scrape still succeeds with darktower_metrics_database_up 0 (and
    without these series) so that the process metrics stay visible exactly when they matter.
    """

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("darktower_metrics_database_up", "1 when the scrape could read the database")
        try:
            with connection.cursor() as cursor:
                metrics = [metric for gauges in database_gauges() for metric in gauges(cursor)]
        except DatabaseError as exc:
            logger.warning("metrics scrape: database unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        yield from metrics


class RedisCollector(Collector):
    """darktower_metrics_redis_up: whether the scrape could ping Redis, as GET /ready asks it (a scrape waits at
    most REDIS_SOCKET_TIMEOUT_SECONDS for it)."""

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("darktower_metrics_redis_up", "1 when the scrape could ping Redis")
        try:
            redis_client().ping()
        except redis.RedisError as exc:
            logger.warning("metrics scrape: Redis unavailable (%s)", type(exc).__name__)
            up.add_metric([], 0)
        else:
            up.add_metric([], 1)
        yield up


class _OwnRegistry(Collector):
    """This process's REGISTRY, as a collector of the scrape's registry (single-process mode)."""

    def collect(self) -> Iterator[Metric]:
        yield from REGISTRY.collect()


def scrape_registry() -> CollectorRegistry:
    """A fresh registry for one scrape: every process's samples (multiprocess) or this one's, plus the database
    and Redis."""
    registry = CollectorRegistry(auto_describe=False)
    if multiprocess_dir():
        MultiProcessCollector(registry, path=multiprocess_dir())
    else:
        registry.register(_OwnRegistry())
    registry.register(DatabaseCollector())
    registry.register(RedisCollector())
    return registry


@require_GET
def metrics_view(request: HttpRequest) -> HttpResponse:
    """GET /metrics in the Prometheus text format, for clients in METRICS_ALLOWED_NETWORKS only (it shows the
    fleet's layout); to anyone else the page does not exist."""
    if not _scraper_allowed(client_address(request.META)):
        raise Http404
    return HttpResponse(generate_latest(scrape_registry()), content_type=CONTENT_TYPE_LATEST)


def _scraper_allowed(client: str | None) -> bool:
    """The client's address (behind a trusted proxy, the one it forwarded for) is in METRICS_ALLOWED_NETWORKS."""
    if client is None:
        return False
    address = ipaddress.ip_address(client)
    return any(address in network for network in settings.METRICS_ALLOWED_NETWORKS_PARSED)


# --- HTTP ---------------------------------------------------------------------------------------------------


class MetricsMiddleware:
    """Counts and times every request by method, URL pattern and status. First in MIDDLEWARE, so it sees the
    final status of everything below it (Django turns exceptions into responses inside the chain)."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        response = self.get_response(request)
        elapsed = time.perf_counter() - started
        match = getattr(request, "resolver_match", None)
        # The pattern, never the path: /api/v1/meetings/<uuid:meeting_id>, not one series per meeting.
        route = (match.route if match is not None else "") or UNMATCHED_ROUTE
        method = request.method if request.method in _HTTP_METHODS else "other"
        HTTP_REQUESTS.labels(method, route, str(response.status_code)).inc()
        HTTP_LATENCY.labels(method, route).observe(elapsed)
        return response


_HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


# --- hot-path tallies -----------------------------------------------------------------------------------------
# A Prometheus update in multiprocess mode is a locked write to a memory-mapped file, and the hot path would pay
# several per heartbeat (bench/FIGURES.md has the cost). So the
# gRPC server's per-call and per-beat counts are tallied in process memory and a publisher thread adds them to
# their metrics every TALLY_PUBLISH_SECONDS (and when the server stops): a scrape sees them at most that late,
# far below any scrape interval. In a process without a running publisher (HTTP, Celery, most tests) tally_count
# and tally_observe update the metric at once.
TALLY_PUBLISH_SECONDS = 1.0


class Tallies:
    """Counts and observations of labelled metric children waiting to be published."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[Any, float] = {}
        # histogram child -> [sum of the observations, observations per bucket (not cumulative)]
        self._observed: dict[Any, list[Any]] = {}
        self.publishing = False

    def count(self, child: Any, amount: float = 1.0) -> None:
        if not self.publishing:
            child.inc(amount)
            return
        with self._lock:
            self._counts[child] = self._counts.get(child, 0.0) + amount

    def observe(self, child: Any, amount: float) -> None:
        if not self.publishing:
            child.observe(amount)
            return
        # Histogram.observe's bucket: the first upper bound >= amount (the last bound is +Inf).
        index = bisect.bisect_left(child._upper_bounds, amount)
        with self._lock:
            entry = self._observed.get(child)
            if entry is None:
                entry = self._observed[child] = [0.0, [0] * len(child._upper_bounds)]
            entry[0] += amount
            entry[1][index] += 1

    def publish(self) -> None:
        """Add what was tallied since the last call to the metrics."""
        with self._lock:
            counts, self._counts = self._counts, {}
            observed, self._observed = self._observed, {}
        for child, amount in counts.items():
            child.inc(amount)
        for child, (total, buckets) in observed.items():
            # Histogram.observe's own writes (prometheus-client 0.26): the sum, then the one bucket.
            child._sum.inc(total)
            for index, number in enumerate(buckets):
                if number:
                    child._buckets[index].inc(number)


TALLIES = Tallies()
tally_count = TALLIES.count
tally_observe = TALLIES.observe


class TallyPublisher:
    """The thread that publishes TALLIES while a gRPC server runs in this process."""

    def __init__(self, interval: float = TALLY_PUBLISH_SECONDS) -> None:
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="metrics-tallies", daemon=True)

    def start(self) -> None:
        TALLIES.publishing = True
        self._thread.start()

    def stop(self) -> None:
        """Publish what is left; from then on counts go to the metrics directly."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(self.interval + 5)
        TALLIES.publishing = False
        TALLIES.publish()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            TALLIES.publish()


# --- gRPC ---------------------------------------------------------------------------------------------------


class CallMetrics:
    """Counts and times every unary call by method and final status code, on a grpc.aio server; counts every
    bidirectional stream by method and final status code, and the messages it answered (a stream's duration
    is its client's business, so it is not timed).

    A handler wrapper (controllers.grpc.server.WrappedHandlers calls `wrap` once per method): put it first, so
    that it wraps the authentication and error mapping (controllers.grpc.guard) and sees the code they ended a
    call with. Server-streaming methods (health Watch) and blocking handlers pass through unrecorded (every
    unary handler of our server is a coroutine, every bidirectional one an async generator).
    """

    def wrap(self, method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
        if inspect.iscoroutinefunction(handler.unary_unary):
            return _timed(method, handler)
        if inspect.isasyncgenfunction(handler.stream_stream):
            return _counted_stream(method, handler)
        return handler


def _final_code(context: grpc.aio.ServicerContext, default: grpc.StatusCode) -> str:
    # context.abort() sets the code, then raises; anything else escaping becomes UNKNOWN in grpcio.
    code = context.code() or default
    return code.name if isinstance(code, grpc.StatusCode) else "UNKNOWN"


def _timed(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    # A coroutine function (wrap checked it); grpc's stubs type handlers as the blocking server calls them.
    behaviour = cast("Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]", handler.unary_unary)
    latency = GRPC_LATENCY.labels(method)
    # The method's counter per status code: labels() takes a lock and builds a key, on every heartbeat call.
    requests: dict[str, Counter] = {}

    async def timed(request: Any, context: grpc.aio.ServicerContext) -> Any:
        started = time.perf_counter()
        code = "UNKNOWN"
        try:
            response = await behaviour(request, context)
            code = _final_code(context, grpc.StatusCode.OK)
            return response
        except BaseException:
            code = _final_code(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            tally_observe(latency, time.perf_counter() - started)
            counter = requests.get(code)
            if counter is None:
                counter = requests[code] = GRPC_REQUESTS.labels(method, code)
            tally_count(counter)

    return grpc.unary_unary_rpc_method_handler(
        timed, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


def _counted_stream(method: str, handler: grpc.RpcMethodHandler) -> grpc.RpcMethodHandler:
    # An async generator function (wrap checked it); grpc's stubs type handlers as the blocking server calls them.
    behaviour = cast(
        "Callable[[AsyncIterator[Any], grpc.aio.ServicerContext], AsyncIterator[Any]]", handler.stream_stream
    )
    messages = GRPC_STREAM_MESSAGES.labels(method)

    async def counted(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        code = "UNKNOWN"
        try:
            async for response in behaviour(requests, context):
                yield response
                tally_count(messages)
            code = _final_code(context, grpc.StatusCode.OK)
        except asyncio.CancelledError:
            code = "CANCELLED"  # the client went away, or the server stopped
            raise
        except BaseException:
            code = _final_code(context, grpc.StatusCode.UNKNOWN)
            raise
        finally:
            tally_count(GRPC_REQUESTS.labels(method, code))

    return grpc.stream_stream_rpc_method_handler(
        counted, request_deserializer=handler.request_deserializer, response_serializer=handler.response_serializer
    )


# Included at /metrics by darktower/urls.py.
urlpatterns = [path("", metrics_view, name="metrics")]
