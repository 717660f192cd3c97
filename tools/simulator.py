"""A simulated fleet of meeting controllers (MCs) and media handlers (MHs) that talks to the GC like real ones.

Everything goes through the front doors a real MC uses: a service token from the OAuth client-credentials
endpoint (POST /api/v1/auth/service/token over HTTP), then RegisterMC / RegisterMH and heartbeats over gRPC
(grpc.aio), at the intervals the registration answer names (fast every 10 s and comprehensive every 30 s by
default; MHs send a load report every load_report_interval_ms). Each member is one coroutine; thousands share a
few channels, with at most `max_in_flight` calls outstanding at once.

The fleet is not uniform: load drifts as a bounded random walk; a `stale_share` of the members goes silent after
a few beats (the stale sweep should mark them unhealthy); a `draining_share` starts reporting DRAINING. A member
whose heartbeat answers NOT_FOUND registers again, as the contract asks. An expired or revoked token
(UNAUTHENTICATED) is fetched again once. With `streams`, each MC sends its beats over one StreamHeartbeats
stream, opened again after it ends (a refused beat, a new token).

With `serve_assignments`, every MC also serves MeetingControllerService on a loopback port of its own (the
grpc_endpoint it registers), as Dark Tower's MCs do: the GC tells it of each meeting it places there. It checks
the GC's token (signed by a key of the GC's JWKS, no audience, scope service.write.mc, service_type
global-controller) and accepts a meeting while it is not draining and has room, counting it in its load; it
refuses otherwise (DRAINING, AT_CAPACITY). Handlers report load as usual, and the GC chooses them per meeting.

gRPC goes over TLS when `tls` is set or a CA file is given (the system's trust store otherwise), with a client
certificate for a server that asks for one (mutual TLS).

No token or secret is ever printed: the summary shows call rates, status codes and latencies only.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import json
import math
import random
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc
import jwt

from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc

TOKEN_PATH = "/api/v1/auth/service/token"
JWKS_PATH = "/.well-known/jwks.json"
MAX_SERVING_CONTROLLERS = 1000
CALL_TIMEOUT_SECONDS = 5.0
# Fetch a new token when this share of its lifetime has passed.
TOKEN_REFRESH_AT = 0.8
# How many latencies the run keeps for its overall percentiles (reservoir sampling beyond that).
RESERVOIR_SIZE = 200_000
# CANCELLED too: the simulator never cancels a call of its own while running, but a GC process that is shutting
# down resets the calls still queued at that moment with CANCELLED (grpcio core; tests/faults/test_sigterm_drains.py
# sees it about one run in four). A real MC retries those like UNAVAILABLE, against the next GC process.
RETRYABLE = frozenset({grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED,
                       grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.CANCELLED})


class SimulatorError(Exception):
    """A failure the simulator cannot work around (refused credentials, an unreachable endpoint)."""


@dataclass(frozen=True)
class FleetConfig:
    target: str
    api: str
    client_id: str
    client_secret: str = field(repr=False)
    controllers: int = 10
    handlers: int = 0
    regions: tuple[str, ...] = ("us-east-1",)
    duration: float | None = None  # None: until stop()
    stale_share: float = 0.05
    draining_share: float = 0.01
    max_in_flight: int = 256
    channels: int = 4
    report_interval: float = 10.0
    id_prefix: str = "sim"
    seed: int | None = None
    # MCs send their beats over StreamHeartbeats (one stream each) instead of a call per beat.
    streams: bool = False
    # MCs serve MeetingControllerService.AssignMeetingWithMh, each on a loopback port of its own.
    serve_assignments: bool = False
    startup_wait: float = 60.0  # how long to wait for the token endpoint and the gRPC server to come up
    # gRPC over TLS: on when `tls` or any file is given. The CA (PEM) the server's certificate must chain to (None:
    # the system's trust store); a client certificate and key (PEM) for servers that require one.
    tls: bool = False
    tls_ca_file: str | None = None
    tls_client_cert_file: str | None = None
    tls_client_key_file: str | None = None

    @property
    def uses_tls(self) -> bool:
        return self.tls or any((self.tls_ca_file, self.tls_client_cert_file, self.tls_client_key_file))

    def __post_init__(self) -> None:
        if bool(self.tls_client_cert_file) != bool(self.tls_client_key_file):
            raise SimulatorError("a TLS client certificate and its key go together")
        if self.controllers < 0 or self.handlers < 0 or self.controllers + self.handlers == 0:
            raise SimulatorError("simulate at least one controller or handler")
        if not self.regions:
            raise SimulatorError("name at least one region")
        for name in ("stale_share", "draining_share"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise SimulatorError(f"{name} must be within 0..1")
        if self.stale_share + self.draining_share > 1.0:
            raise SimulatorError("stale_share + draining_share must not exceed 1")
        if self.serve_assignments and self.controllers > MAX_SERVING_CONTROLLERS:
            raise SimulatorError(f"serve assignments for at most {MAX_SERVING_CONTROLLERS} controllers (a port each)")
        if self.max_in_flight < 1 or self.channels < 1 or self.report_interval <= 0:
            raise SimulatorError("max_in_flight, channels and report_interval must be positive")


# --- tokens ---------------------------------------------------------------------------------------------------


class TokenSource:
    """A service token from the client-credentials endpoint, fetched again before it expires."""

    def __init__(self, *, api: str, client_id: str, client_secret: str, scope: str, wait: float) -> None:
        self._url = api.rstrip("/") + TOKEN_PATH
        self._basic = base64.b64encode(
            f"{urllib.parse.quote(client_id)}:{urllib.parse.quote(client_secret)}".encode()
        ).decode()
        self._scope = scope
        self._wait = wait
        self._token: str | None = None
        self._refresh_at = 0.0
        self._lock = asyncio.Lock()
        self.fetched = 0

    def __repr__(self) -> str:
        return f"<TokenSource {self._url} scope={self._scope!r}>"

    async def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {await self.get()}"),)

    async def get(self) -> str:
        if self._token is None or time.monotonic() >= self._refresh_at:
            async with self._lock:
                if self._token is None or time.monotonic() >= self._refresh_at:
                    token, expires_in = await asyncio.to_thread(self._fetch)
                    self._token = token
                    self._refresh_at = time.monotonic() + max(1.0, expires_in * TOKEN_REFRESH_AT)
                    self.fetched += 1
        return self._token

    def invalidate(self) -> None:
        self._token = None

    def _fetch(self) -> tuple[str, float]:
        body = urllib.parse.urlencode({"grant_type": "client_credentials", "scope": self._scope}).encode()
        deadline = time.monotonic() + self._wait
        delay = 0.5
        while True:
            request = urllib.request.Request(  # noqa: S310 (the operator's --api URL, http or https)
                self._url, data=body, method="POST",
                headers={"Authorization": f"Basic {self._basic}",
                         "Content-Type": "application/x-www-form-urlencoded", "Accept": "application/json"},
            )
            retry_after = delay
            try:
                with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
                    answer = json.loads(response.read())
                return str(answer["access_token"]), float(answer.get("expires_in", 3600))
            except urllib.error.HTTPError as exc:
                if exc.code != 429 and exc.code < 500:
                    raise SimulatorError(f"token endpoint refused the credentials: HTTP {exc.code} "
                                         f"{_oauth_error(exc)}") from None
                retry_after = float(exc.headers.get("Retry-After") or delay)
                reason = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                reason = type(exc).__name__
            if time.monotonic() + retry_after > deadline:
                raise SimulatorError(f"token endpoint {self._url} unavailable ({reason})")
            time.sleep(retry_after)
            delay = min(delay * 2, 5.0)


def _oauth_error(exc: urllib.error.HTTPError) -> str:
    try:
        return str(json.loads(exc.read()).get("error", ""))
    except (ValueError, AttributeError):
        return ""


# --- statistics -----------------------------------------------------------------------------------------------


def _percentile(values: list[float], p: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]


@dataclass
class Window:
    """What happened during one report interval (or the whole run)."""

    seconds: float
    calls: int
    codes: dict[str, int]
    by_method: dict[str, int]
    p50_ms: float
    p99_ms: float

    @property
    def rate(self) -> float:
        return self.calls / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors(self) -> dict[str, int]:
        return {code: count for code, count in self.codes.items() if code != "OK"}


class Stats:
    def __init__(self, rng: random.Random) -> None:
        self._rng = rng
        self.started = time.monotonic()
        self.codes: Counter[str] = Counter()
        self.methods: Counter[str] = Counter()
        self.latencies: list[float] = []
        self._seen = 0
        self._window_start = self.started
        self._window_codes: Counter[str] = Counter()
        self._window_methods: Counter[str] = Counter()
        self._window_latencies: list[float] = []

    def record(self, method: str, code: grpc.StatusCode, seconds: float) -> None:
        self.codes[code.name] += 1
        self.methods[method] += 1
        self._window_codes[code.name] += 1
        self._window_methods[method] += 1
        self._window_latencies.append(seconds)
        self._seen += 1
        if len(self.latencies) < RESERVOIR_SIZE:
            self.latencies.append(seconds)
        else:
            slot = self._rng.randrange(self._seen)
            if slot < RESERVOIR_SIZE:
                self.latencies[slot] = seconds

    def window(self) -> Window:
        now = time.monotonic()
        window = Window(
            seconds=now - self._window_start, calls=sum(self._window_codes.values()),
            codes=dict(self._window_codes), by_method=dict(self._window_methods),
            p50_ms=_percentile(self._window_latencies, 50) * 1000,
            p99_ms=_percentile(self._window_latencies, 99) * 1000,
        )
        self._window_start = now
        self._window_codes, self._window_methods, self._window_latencies = Counter(), Counter(), []
        return window

    def total(self) -> Window:
        return Window(
            seconds=time.monotonic() - self.started, calls=sum(self.codes.values()), codes=dict(self.codes),
            by_method=dict(self.methods), p50_ms=_percentile(self.latencies, 50) * 1000,
            p99_ms=_percentile(self.latencies, 99) * 1000,
        )


@dataclass
class FleetState:
    registered: int = 0
    silent: int = 0
    draining: int = 0
    reregistered: int = 0
    in_flight: int = 0
    meetings_accepted: int = 0
    meetings_refused: int = 0


@dataclass
class Summary:
    total: Window
    state: FleetState
    tokens_fetched: int


def format_window(window: Window, state: FleetState, config: FleetConfig, *, elapsed: float) -> str:
    errors = ", ".join(f"{code} {count:,}" for code, count in sorted(window.errors.items())) or "none"
    members = config.controllers + config.handlers
    return (
        f"[{elapsed:6.0f}s] {window.rate:8,.0f} calls/s  p50 {window.p50_ms:6.2f} ms  p99 {window.p99_ms:7.2f} ms  "
        f"errors: {errors}  registered {state.registered:,}/{members:,}  silent {state.silent:,}  "
        f"draining {state.draining:,}  in flight {state.in_flight}"
        + (f"  meetings accepted {state.meetings_accepted:,} refused {state.meetings_refused:,}"
           if config.serve_assignments else "")
    )


def _rng(seed: int | str | None) -> random.Random:
    # Simulated load and timing, repeatable from --seed: nothing secret is drawn from it.
    return random.Random(seed)  # noqa: S311


# --- load -----------------------------------------------------------------------------------------------------


@dataclass
class Load:
    """A member's load: a bounded random walk, so that placement sees controllers fill and empty."""

    rng: random.Random
    capacity: int
    current: int = 0
    cpu: float = 10.0
    memory: float = 30.0

    def drift(self) -> None:
        step = max(1, self.capacity // 20)
        self.current = min(self.capacity, max(0, self.current + self.rng.randint(-step, step)))
        share = self.current / self.capacity
        self.cpu = min(100.0, max(0.0, 5.0 + 80.0 * share + self.rng.uniform(-5.0, 5.0)))
        self.memory = min(100.0, max(0.0, 20.0 + 60.0 * share + self.rng.uniform(-2.0, 2.0)))


# --- the fleet ------------------------------------------------------------------------------------------------


class StreamedBeats:
    """An MC's heartbeat stream, used like one unary call per beat: opened at the first beat, and again after it
    ended (a refused beat ends it) or when the token changed. A beat that fails raises AioRpcError with the
    stream's status, as its call would."""

    def __init__(self, stub: internal_pb2_grpc.GlobalControllerServiceStub) -> None:
        self._stub = stub
        self._call: Any = None
        self._metadata: Any = None

    async def send(self, kind: str, request: Any, *, metadata: Any, timeout: float) -> Any:
        if self._call is None or self._call.done() or metadata != self._metadata:
            if self._call is not None:
                self._call.cancel()
            self._call, self._metadata = self._stub.StreamHeartbeats(metadata=metadata), metadata
        call = self._call
        try:
            answer = await asyncio.wait_for(self._exchange(call, kind, request), timeout)
        except TimeoutError:
            # A beat written and not answered: the stream's order is lost, so it is dropped.
            call.cancel()
            self._call = None
            raise grpc.aio.AioRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, grpc.aio.Metadata(), grpc.aio.Metadata(),
                                       "no answer to the beat in time") from None
        return getattr(answer, kind)

    @staticmethod
    async def _exchange(call: Any, kind: str, request: Any) -> Any:
        await call.write(pb.HeartbeatStreamRequest(**{kind: request}))
        answer = await call.read()
        if answer is grpc.aio.EOF:  # the server ended the stream with OK: it should not, but say so as a call would
            raise grpc.aio.AioRpcError(await call.code(), await call.initial_metadata(),
                                       await call.trailing_metadata(), await call.details())
        return answer


@dataclass(frozen=True)
class Member:
    index: int
    member_id: str
    region: str
    fate: str  # "normal", "silent" (stops after `turn` beats), "draining" (reports DRAINING from beat `turn`)
    turn: int


class GcTokenCheck:
    """The check an MC makes of the GC's token on AssignMeetingWithMh: a key from the GC's JWKS (cached),
    EdDSA, unexpired, no audience, scope service.write.mc and service_type global-controller."""

    def __init__(self, jwks_url: str) -> None:
        self._keys = jwt.PyJWKClient(jwks_url, cache_keys=True, lifespan=300)

    def __call__(self, metadata: Any) -> bool:
        header = dict(metadata or ()).get("authorization", "")
        if not header.startswith("Bearer "):
            return False
        token = header[len("Bearer "):]
        try:
            key = self._keys.get_signing_key_from_jwt(token)
            claims = jwt.decode(token, key.key, algorithms=["EdDSA"], options={"require": ["exp"],
                                "verify_aud": False})
        except (jwt.PyJWTError, OSError):
            return False
        return ("aud" not in claims and "service.write.mc" in str(claims.get("scope", "")).split()
                and claims.get("service_type") == "global-controller")


class _AssignmentServicer(internal_pb2_grpc.MeetingControllerServiceServicer):
    """One simulated MC's MeetingControllerService."""

    def __init__(self, load: Load, is_draining: Callable[[], bool], check: GcTokenCheck, state: FleetState):
        self.load, self.is_draining, self.check, self.state = load, is_draining, check, state
        self.meetings: set[str] = set()

    async def AssignMeetingWithMh(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        if not await asyncio.to_thread(self.check, context.invocation_metadata()):
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, "Invalid token")
        if self.is_draining():
            reason = pb.REJECTION_REASON_DRAINING
        elif self.load.current >= self.load.capacity:
            reason = pb.REJECTION_REASON_AT_CAPACITY
        elif not request.mh_assignments or request.meeting_id in self.meetings:
            reason = pb.REJECTION_REASON_UNHEALTHY
        else:
            self.meetings.add(request.meeting_id)
            self.load.current += 1
            self.state.meetings_accepted += 1
            return pb.AssignMeetingWithMhResponse(accepted=True)
        self.state.meetings_refused += 1
        return pb.AssignMeetingWithMhResponse(accepted=False, rejection_reason=reason)


class Fleet:
    """Runs the simulated fleet until its duration has passed or stop() is called; run() returns the totals."""

    def __init__(self, config: FleetConfig, *, write: Callable[[str], None] = print) -> None:
        self.config = config
        self.write = write
        self.rng = _rng(config.seed)
        self.stats = Stats(_rng(config.seed))
        self.state = FleetState()
        scopes = (["mc:register"] if config.controllers else []) + (["mh:register"] if config.handlers else [])
        self.tokens = TokenSource(
            api=config.api, client_id=config.client_id, client_secret=config.client_secret,
            scope=" ".join(scopes), wait=config.startup_wait,
        )
        self._stop = asyncio.Event()
        self._in_flight = asyncio.Semaphore(config.max_in_flight)
        self._token_check = GcTokenCheck(config.api.rstrip("/") + JWKS_PATH) if config.serve_assignments else None

    def stop(self) -> None:
        self._stop.set()

    def members(self, count: int, kind: str) -> list[Member]:
        """`count` members of `kind` ("mc" or "mh") across the regions; exact numbers of silent and draining."""
        silent = round(count * self.config.stale_share)
        draining = round(count * self.config.draining_share)
        fates = ["silent"] * silent + ["draining"] * draining + ["normal"] * (count - silent - draining)
        self.rng.shuffle(fates)
        regions = self.config.regions
        return [
            Member(
                index=index, region=regions[index % len(regions)], fate=fates[index], turn=self.rng.randint(1, 3),
                member_id=f"{self.config.id_prefix}-{kind}-{regions[index % len(regions)]}-{index:06d}",
            )
            for index in range(count)
        ]

    def _channel_credentials(self) -> grpc.ChannelCredentials | None:
        config = self.config
        if not config.uses_tls:
            return None

        def read(path: str | None) -> bytes | None:
            if not path:
                return None
            try:
                with open(path, "rb") as pem:
                    return pem.read()
            except OSError as exc:
                raise SimulatorError(f"cannot read {path}: {exc.strerror or exc}") from None

        return grpc.ssl_channel_credentials(
            root_certificates=read(config.tls_ca_file), private_key=read(config.tls_client_key_file),
            certificate_chain=read(config.tls_client_cert_file),
        )

    def _channel(self, credentials: grpc.ChannelCredentials | None) -> grpc.aio.Channel:
        # Channels with equal arguments share one connection (and one server process behind SO_REUSEPORT): a
        # subchannel pool of its own gives each channel its own connection.
        options = [("grpc.use_local_subchannel_pool", 1)]
        if credentials is None:
            return grpc.aio.insecure_channel(self.config.target, options=options)
        return grpc.aio.secure_channel(self.config.target, credentials, options=options)

    async def run(self) -> Summary:
        credentials = self._channel_credentials()
        await self.tokens.get()  # fail fast on bad credentials
        channels = [self._channel(credentials) for _ in range(self.config.channels)]
        try:
            await self._wait_for_server(channels[0])
            tasks = [
                asyncio.create_task(self._controller(member, channels[member.index % len(channels)]))
                for member in self.members(self.config.controllers, "mc")
            ] + [
                asyncio.create_task(self._handler(member, channels[member.index % len(channels)]))
                for member in self.members(self.config.handlers, "mh")
            ]
            for task in tasks:
                task.add_done_callback(self._member_done)
            reporter = asyncio.create_task(self._report())
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=self.config.duration)
            except TimeoutError:
                self._stop.set()
            results = await asyncio.gather(*tasks, return_exceptions=True)
            reporter.cancel()
            failures = [result for result in results if isinstance(result, BaseException)]
            if failures:
                raise failures[0]
        finally:
            for channel in channels:
                await channel.close()
        return Summary(total=self.stats.total(), state=self.state, tokens_fetched=self.tokens.fetched)

    def _registered(self) -> None:
        """Count a first registration; say once when every member has one (`make run` waits for that line)."""
        self.state.registered += 1
        members = self.config.controllers + self.config.handlers
        if self.state.registered == members:
            self.write(f"all {members} members registered")

    def _member_done(self, task: asyncio.Task[None]) -> None:
        # One member failing for a reason no real MC would retry stops the whole run: its error is the result.
        if not task.cancelled() and task.exception() is not None:
            self._stop.set()

    async def _wait_for_server(self, channel: grpc.aio.Channel) -> None:
        try:
            await asyncio.wait_for(channel.channel_ready(), timeout=self.config.startup_wait)
        except TimeoutError:
            raise SimulatorError(f"gRPC server {self.config.target} unreachable") from None

    async def _report(self) -> None:
        while True:
            await asyncio.sleep(self.config.report_interval)
            self.write(format_window(self.stats.window(), self.state, self.config,
                                     elapsed=time.monotonic() - self.stats.started))

    async def _sleep(self, seconds: float) -> bool:
        """Sleep unless stopped; True when the fleet is stopping."""
        if seconds > 0:
            try:
                await asyncio.wait_for(self._stop.wait(), timeout=seconds)
            except TimeoutError:
                return False
        return self._stop.is_set()

    async def _call(self, method: str, rpc: Callable[..., Awaitable[Any]], request: Any) -> Any:
        """One call, timed and counted: the response, or the status code when it failed with NOT_FOUND or a
        retryable code. Any other failure is a bug on one side or the other and stops the simulator."""
        for attempt in range(2):
            metadata = await self.tokens.metadata()
            async with self._in_flight:
                self.state.in_flight += 1
                started = time.perf_counter()
                try:
                    response = await rpc(request, metadata=metadata, timeout=CALL_TIMEOUT_SECONDS)
                    code = grpc.StatusCode.OK
                except grpc.aio.AioRpcError as exc:
                    response, code = None, exc.code()
                finally:
                    self.state.in_flight -= 1
            self.stats.record(method, code, time.perf_counter() - started)
            if code == grpc.StatusCode.UNAUTHENTICATED and attempt == 0:
                self.tokens.invalidate()
                continue
            if code not in (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND) and code not in RETRYABLE:
                raise SimulatorError(f"{method} answered {code.name}")
            return response if code == grpc.StatusCode.OK else code
        raise SimulatorError(f"{method} answered UNAUTHENTICATED with a fresh token")

    async def _register(self, method: str, rpc: Callable[..., Awaitable[Any]], request: Any) -> Any | None:
        """Register, retrying with backoff while the server is unavailable; None when stopping."""
        delay = 0.5
        while not self._stop.is_set():
            answer = await self._call(method, rpc, request)
            if not isinstance(answer, grpc.StatusCode):
                return answer
            if await self._sleep(delay * self.rng.uniform(0.5, 1.5)):
                return None
            delay = min(delay * 2, 10.0)
        return None

    async def _controller(self, member: Member, channel: grpc.aio.Channel) -> None:
        stub = internal_pb2_grpc.GlobalControllerServiceStub(channel)
        rng = _rng(f"{self.config.seed}-{member.member_id}")
        load = Load(rng, capacity=rng.choice((50, 100, 200)))
        grpc_endpoint = f"grpc://{member.member_id}.{member.region}.sim.internal:50052"
        server = None
        reporting = {"draining": False}  # what its beats report, which its answers to the GC follow
        if self._token_check is not None:
            server = grpc.aio.server(options=[("grpc.so_reuseport", 0)])
            servicer = _AssignmentServicer(load, lambda: reporting["draining"], self._token_check, self.state)
            internal_pb2_grpc.add_MeetingControllerServiceServicer_to_server(servicer, server)
            grpc_endpoint = f"http://127.0.0.1:{server.add_insecure_port('127.0.0.1:0')}"
            await server.start()
        try:
            await self._run_controller(member, stub, rng, load, grpc_endpoint, reporting)
        finally:
            if server is not None:
                await server.stop(grace=None)

    async def _run_controller(
        self, member: Member, stub: Any, rng: random.Random, load: Load, grpc_endpoint: str,
        reporting: dict[str, bool],
    ) -> None:
        register = pb.RegisterMCRequest(
            id=member.member_id, region=member.region, grpc_endpoint=grpc_endpoint,
            webtransport_endpoint=f"https://{member.member_id}.{member.region}.sim.internal:4433",
            max_meetings=load.capacity, max_participants=load.capacity * 10,
        )
        # Registrations spread over the first second rather than all at the same instant.
        if await self._sleep(rng.uniform(0, 1.0)):
            return
        answer = await self._register("RegisterMC", stub.RegisterMC, register)
        if answer is None:
            return
        self._registered()
        if self.config.streams:
            stream = StreamedBeats(stub)
            send_fast: Callable[..., Awaitable[Any]] = functools.partial(stream.send, "fast")
            send_comprehensive: Callable[..., Awaitable[Any]] = functools.partial(stream.send, "comprehensive")
            fast_method, comprehensive_method = "StreamHeartbeats/fast", "StreamHeartbeats/comprehensive"
        else:
            send_fast, send_comprehensive = stub.FastHeartbeat, stub.ComprehensiveHeartbeat
            fast_method, comprehensive_method = "FastHeartbeat", "ComprehensiveHeartbeat"
        fast = (answer.fast_heartbeat_interval_ms or 10_000) / 1000
        comprehensive = (answer.comprehensive_heartbeat_interval_ms or 30_000) / 1000
        loop = asyncio.get_running_loop()
        start = loop.time()
        next_fast = start + rng.uniform(0, fast)
        next_comprehensive = start + rng.uniform(0, comprehensive)
        beats = 0
        while not await self._sleep(min(next_fast, next_comprehensive) - loop.time()):
            if member.fate == "silent" and beats >= member.turn:
                self.state.silent += 1
                return
            draining = member.fate == "draining" and beats >= member.turn
            if draining and beats == member.turn:
                self.state.draining += 1
            reporting["draining"] = draining
            health = pb.DRAINING if draining else pb.HEALTHY
            load.drift()
            capacity = pb.ControllerCapacity(
                max_meetings=load.capacity, current_meetings=load.current,
                max_participants=load.capacity * 10, current_participants=load.current * rng.randint(2, 8),
            )
            if next_comprehensive <= next_fast:
                next_comprehensive += comprehensive
                answer = await self._call(comprehensive_method, send_comprehensive,
                                          pb.ComprehensiveHeartbeatRequest(
                                              controller_id=member.member_id, capacity=capacity, health=health,
                                              cpu_usage_percent=load.cpu, memory_usage_percent=load.memory))
            else:
                next_fast += fast
                answer = await self._call(fast_method, send_fast, pb.FastHeartbeatRequest(
                    controller_id=member.member_id, capacity=capacity, health=health))
            beats += 1
            if answer == grpc.StatusCode.NOT_FOUND:
                # Deleted by an operator (or never stored): the contract says register again.
                if await self._register("RegisterMC", stub.RegisterMC, register) is None:
                    return
                self.state.reregistered += 1

    async def _handler(self, member: Member, channel: grpc.aio.Channel) -> None:
        stub = internal_pb2_grpc.MediaHandlerRegistryServiceStub(channel)
        rng = _rng(f"{self.config.seed}-{member.member_id}")
        load = Load(rng, capacity=rng.choice((200, 500, 1000)))
        register = pb.RegisterMHRequest(
            handler_id=member.member_id, region=member.region,
            webtransport_endpoint=f"https://{member.member_id}.{member.region}.sim.internal:4433",
            grpc_endpoint=f"grpc://{member.member_id}.{member.region}.sim.internal:50053",
            max_streams=load.capacity,
        )
        if await self._sleep(rng.uniform(0, 1.0)):
            return
        answer = await self._register("RegisterMH", stub.RegisterMH, register)
        if answer is None:
            return
        self._registered()
        interval = (answer.load_report_interval_ms or 10_000) / 1000
        beats = 0
        if await self._sleep(rng.uniform(0, interval)):
            return
        while True:
            if member.fate == "silent" and beats >= member.turn:
                self.state.silent += 1
                return
            draining = member.fate == "draining" and beats >= member.turn
            if draining and beats == member.turn:
                self.state.draining += 1
            load.drift()
            answer = await self._call("SendLoadReport", stub.SendLoadReport, pb.SendLoadReportRequest(
                handler_id=member.member_id, current_streams=load.current,
                health=pb.DRAINING if draining else pb.HEALTHY, cpu_usage_percent=load.cpu,
                memory_usage_percent=load.memory, bandwidth_usage_percent=load.cpu * 0.8))
            beats += 1
            if answer == grpc.StatusCode.NOT_FOUND:
                if await self._register("RegisterMH", stub.RegisterMH, register) is None:
                    return
                self.state.reregistered += 1
            if await self._sleep(interval):
                return
