"""StreamHeartbeats over the real server: an MC's beats on one stream, each served as its unary call would be."""

from __future__ import annotations

import asyncio
import queue
import threading
import time

import grpc
import pytest
from django.conf import settings

from accounts import blacklist
from accounts.tokens import token_revoke, token_verify
from controllers.grpc.ratelimit import beat_buckets
from controllers.heartbeats import controller_heartbeats
from controllers.models import HealthStatus, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc
from tests.beats import beat_buckets_reset
from tests.controllers.grpc.conftest import bearer, endpoint_token, every_worker_busy, issue, metric_sample
from tests.factories import make_controller
from tests.faults.processes import wait_for

pytestmark = pytest.mark.usefixtures("fresh_revocation_lookups")

METHOD = "/dark_tower.internal.v1.GlobalControllerService/StreamHeartbeats"
IDLE = "no beat within GRPC_STREAM_IDLE_TIMEOUT_SECONDS; open a new stream"


class Stream:
    """One StreamHeartbeats call driven a beat at a time, as an MC does."""

    def __init__(self, stub, metadata, timeout: float = 30) -> None:  # type: ignore[no-untyped-def]
        self._beats: queue.Queue[pb.HeartbeatStreamRequest | None] = queue.Queue()
        self.call = stub.StreamHeartbeats(iter(self._beats.get, None), metadata=metadata, timeout=timeout)

    def send(self, **beat) -> pb.HeartbeatStreamResponse:  # type: ignore[no-untyped-def]
        self._beats.put(pb.HeartbeatStreamRequest(**beat))
        return next(self.call)

    def refused(self, message: pb.HeartbeatStreamRequest | None = None) -> grpc.RpcError:
        """The status the stream ends with after `message` (None: right after opening)."""
        if message is not None:
            self._beats.put(message)
        with pytest.raises(grpc.RpcError) as raised:
            next(self.call)
        return raised.value

    def close(self) -> None:
        self._beats.put(None)
        assert list(self.call) == []
        assert self.call.code() == grpc.StatusCode.OK


def fast(controller_id: str = "mc-s-1", *, health: int = pb.HEALTHY, current: int = 3) -> pb.FastHeartbeatRequest:
    return pb.FastHeartbeatRequest(controller_id=controller_id, health=health, capacity=pb.ControllerCapacity(
        max_meetings=10, current_meetings=current, max_participants=100, current_participants=current * 10))


def test_beats_are_acknowledged_in_order_by_kind_and_written(mc_stub, auth):
    make_controller(controller_id="mc-s-1", health=HealthStatus.PENDING)
    messages_before = metric_sample("darktower_grpc_stream_messages_total", method=METHOD)
    streams_before = metric_sample("darktower_grpc_requests_total", method=METHOD, code="OK")
    stream = Stream(mc_stub, auth)

    before = int(time.time())
    first = stream.send(fast=fast(current=1))
    # The first beat makes the controller healthy: written, with its transition, before the answer.
    assert first.WhichOneof("ack") == "fast" and first.fast.acknowledged
    assert before <= first.fast.timestamp <= int(time.time())
    assert MeetingController.objects.get(pk="mc-s-1").health_status == HealthStatus.HEALTHY
    for current in range(2, 7):
        assert stream.send(fast=fast(current=current)).fast.acknowledged
    comprehensive = stream.send(comprehensive=pb.ComprehensiveHeartbeatRequest(
        controller_id="mc-s-1", health=pb.HEALTHY, capacity=fast(current=7).capacity, cpu_usage_percent=41.5,
        memory_usage_percent=52.0,
    ))
    assert comprehensive.WhichOneof("ack") == "comprehensive" and comprehensive.comprehensive.acknowledged
    stream.close()

    controller_heartbeats.flush()
    controller = MeetingController.objects.get(pk="mc-s-1")
    assert (controller.current_meetings, controller.current_participants, controller.cpu_usage_percent) == (
        7, 70, 41.5,
    )
    wait_for(lambda: metric_sample("darktower_grpc_requests_total", method=METHOD, code="OK") == streams_before + 1,
             timeout=5, what="the stream counted")
    assert metric_sample("darktower_grpc_stream_messages_total", method=METHOD) == messages_before + 7


def test_a_stream_without_a_usable_token_ends_before_any_beat(mc_stub, grpc_server):
    missing = Stream(mc_stub, ()).refused()
    assert (missing.code(), missing.details()) == (grpc.StatusCode.UNAUTHENTICATED, "missing bearer token")

    forged = Stream(mc_stub, bearer(issue()[:-4] + "AAAA")).refused()
    assert forged.code() == grpc.StatusCode.UNAUTHENTICATED

    media_only = Stream(mc_stub, bearer(issue(scopes=("mh:register",)))).refused()
    assert (media_only.code(), media_only.details()) == (
        grpc.StatusCode.PERMISSION_DENIED, "token lacks the mc:register scope",
    )


@pytest.mark.parametrize(
    ("beat", "code", "details"),
    [
        ({}, grpc.StatusCode.INVALID_ARGUMENT, "beat: must be one of fast, comprehensive"),
        ({"fast": fast("mc-s-2")}, grpc.StatusCode.INVALID_ARGUMENT,
         "controller_id: every beat on a stream must name the member of its first beat"),
        ({"fast": pb.FastHeartbeatRequest(controller_id="mc-s-1", capacity=pb.ControllerCapacity(max_meetings=0))},
         grpc.StatusCode.INVALID_ARGUMENT, None),
        ({"comprehensive": pb.ComprehensiveHeartbeatRequest(controller_id="mc-s-1", cpu_usage_percent=101)},
         grpc.StatusCode.INVALID_ARGUMENT, None),
    ],
    ids=["no-beat", "other-controller", "zero-maximum", "cpu-over-100"],
)
def test_a_refused_beat_ends_the_stream_with_its_unary_status(mc_stub, auth, beat, code, details):
    make_controller(controller_id="mc-s-1", health=HealthStatus.HEALTHY)
    make_controller(controller_id="mc-s-2", health=HealthStatus.HEALTHY)
    stream = Stream(mc_stub, auth)
    assert stream.send(fast=fast()).fast.acknowledged

    error = stream.refused(pb.HeartbeatStreamRequest(**beat))

    assert error.code() == code
    if details is not None:
        assert error.details() == details
    else:
        # The same words as the unary call of that kind.
        kind = next(iter(beat))
        unary = mc_stub.FastHeartbeat if kind == "fast" else mc_stub.ComprehensiveHeartbeat
        with pytest.raises(grpc.RpcError) as alone:
            unary(beat[kind], metadata=auth)
        assert (alone.value.code(), alone.value.details()) == (code, error.details())


def test_a_beat_of_an_unknown_controller_ends_the_stream_not_found(mc_stub, auth):
    error = Stream(mc_stub, auth).refused(pb.HeartbeatStreamRequest(fast=fast("mc-s-nobody")))
    assert error.code() == grpc.StatusCode.NOT_FOUND


def test_malformed_bytes_on_a_stream_are_invalid_argument(channel, auth):
    call = channel.stream_stream(METHOD)(iter([b"\xff\xff\xff"]), metadata=auth, timeout=10)
    with pytest.raises(grpc.RpcError) as raised:
        list(call)
    assert (raised.value.code(), raised.value.details()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "malformed request message",
    )


def test_a_revoked_token_ends_the_stream_at_its_next_beat(mc_stub, service_credential):
    make_controller(controller_id="mc-s-1", health=HealthStatus.HEALTHY)
    token = endpoint_token(service_credential)
    stream = Stream(mc_stub, bearer(token))
    assert stream.send(fast=fast()).fast.acknowledged

    token_revoke(token_verify(token, audience=settings.JWT_SERVICE_AUDIENCE))
    blacklist.blacklist_cache_clear()  # as LOOKUP_CACHE_SECONDS passing would
    error = stream.refused(pb.HeartbeatStreamRequest(fast=fast()))

    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, "token revoked")


def test_an_expired_token_ends_the_stream_at_its_next_beat(mc_stub, grpc_server, settings):
    # Expired 5 s ago but within the allowed skew; shrinking the skew is the clock moving past its expiry.
    settings.JWT_CLOCK_SKEW_SECONDS = 60
    make_controller(controller_id="mc-s-1", health=HealthStatus.HEALTHY)
    stream = Stream(mc_stub, bearer(issue(lifetime_seconds=-5)))
    assert stream.send(fast=fast()).fast.acknowledged

    settings.JWT_CLOCK_SKEW_SECONDS = 0
    error = stream.refused(pb.HeartbeatStreamRequest(fast=fast()))

    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, "token expired")


def test_an_idle_stream_ends_after_the_idle_timeout(mc_stub, auth, settings):
    # The timeout is long beside a beat's round trip even on a loaded machine (xdist, two cores): a scheduling
    # stall between two beats longer than it would end the stream while the test still means to keep it open.
    settings.GRPC_STREAM_IDLE_TIMEOUT_SECONDS = 1.0
    make_controller(controller_id="mc-s-1", health=HealthStatus.HEALTHY)
    # The client's own deadline is far beyond the idle timeout: the server must be the one ending it.
    stream = Stream(mc_stub, auth, timeout=20)
    # Beats closer together than the timeout keep the stream open, however long it lives.
    opened = time.monotonic()
    while time.monotonic() - opened < 1.5:
        assert stream.send(fast=fast()).fast.acknowledged

    error = stream.refused()  # no beat any more

    assert (error.code(), error.details()) == (grpc.StatusCode.DEADLINE_EXCEEDED, IDLE)
    assert time.monotonic() - opened < 10


def test_a_stream_ends_at_its_tokens_expiry_without_a_beat(mc_stub, grpc_server, settings):
    settings.JWT_CLOCK_SKEW_SECONDS = 0
    settings.GRPC_STREAM_IDLE_TIMEOUT_SECONDS = 3600
    make_controller(controller_id="mc-s-1", health=HealthStatus.HEALTHY)
    token = issue(lifetime_seconds=2)
    expires_at = token_verify(token, audience=settings.JWT_SERVICE_AUDIENCE).expires_at_unix
    stream = Stream(mc_stub, bearer(token), timeout=20)
    assert stream.send(fast=fast()).fast.acknowledged

    error = stream.refused()  # no beat: the server ends it at exp

    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, "token expired")
    assert expires_at <= time.time() < expires_at + 10


def test_a_revoked_token_ends_an_idle_stream_within_the_idle_timeout(mc_stub, service_credential, settings):
    settings.GRPC_STREAM_IDLE_TIMEOUT_SECONDS = 0.5
    make_controller(controller_id="mc-s-1", health=HealthStatus.HEALTHY)
    token = endpoint_token(service_credential)
    stream = Stream(mc_stub, bearer(token), timeout=20)
    assert stream.send(fast=fast()).fast.acknowledged
    revoked_at = time.monotonic()

    token_revoke(token_verify(token, audience=settings.JWT_SERVICE_AUDIENCE))
    error = stream.refused()  # no beat

    assert (error.code(), error.details()) == (grpc.StatusCode.UNAUTHENTICATED, "token revoked")
    assert time.monotonic() - revoked_at < 10


def test_beats_on_a_stream_share_the_unary_calls_rate_limit(mc_stub, auth, settings):
    settings.GRPC_HEARTBEAT_BURST = 3
    settings.FAST_HEARTBEAT_INTERVAL_MS = settings.COMPREHENSIVE_HEARTBEAT_INTERVAL_MS = 3_600_000
    beat_buckets_reset(beat_buckets)
    make_controller(controller_id="mc-s-1", health=HealthStatus.HEALTHY)
    try:
        assert mc_stub.FastHeartbeat(fast(), metadata=auth).acknowledged
        stream = Stream(mc_stub, auth)
        assert stream.send(fast=fast()).fast.acknowledged
        assert stream.send(fast=fast()).fast.acknowledged

        error = stream.refused(pb.HeartbeatStreamRequest(fast=fast()))
    finally:
        beat_buckets_reset(beat_buckets)

    assert (error.code(), error.details()) == (grpc.StatusCode.RESOURCE_EXHAUSTED, "too many heartbeats")
    assert int(dict(error.trailing_metadata())["retry-after"]) >= 1


def test_beats_on_a_stream_are_answered_while_every_worker_is_busy(mc_stub, auth, grpc_server):
    make_controller(controller_id="mc-s-1", health=HealthStatus.HEALTHY)
    stream = Stream(mc_stub, auth)
    assert stream.send(fast=fast()).fast.acknowledged  # the member and the token are known from here on

    with every_worker_busy(grpc_server):
        for current in range(5):
            assert stream.send(fast=fast(current=current)).fast.acknowledged
    stream.close()


def test_many_streams_open_at_once_are_all_served(grpc_server, auth):
    # grpc core cancels calls beyond 1,000 waiting for the event loop unless told otherwise (server.py).
    count = 1500
    for index in range(count):
        make_controller(controller_id=f"mc-many-{index}", health=HealthStatus.HEALTHY)

    async def fleet() -> list[grpc.StatusCode]:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{grpc_server.port}") as aio_channel:
            stub = internal_pb2_grpc.GlobalControllerServiceStub(aio_channel)
            calls = [stub.StreamHeartbeats(metadata=auth, timeout=60) for _ in range(count)]
            await asyncio.gather(*(call.write(pb.HeartbeatStreamRequest(fast=fast(f"mc-many-{index}")))
                                   for index, call in enumerate(calls)))
            answers = await asyncio.gather(*(call.read() for call in calls))
            assert all(answer.fast.acknowledged for answer in answers)
            await asyncio.gather(*(call.done_writing() for call in calls))
            return list(await asyncio.gather(*(call.code() for call in calls)))

    assert asyncio.run(fleet()) == [grpc.StatusCode.OK] * count


def test_a_stopping_server_ends_open_streams_at_once_with_unavailable(mc_stub, auth, grpc_server):
    make_controller(controller_id="mc-s-1", health=HealthStatus.HEALTHY)
    make_controller(controller_id="mc-s-2", health=HealthStatus.HEALTHY)
    waiting = Stream(mc_stub, auth)
    assert waiting.send(fast=fast()).fast.acknowledged
    # A stream whose beat is being served when the server stops: answered first, then ended.
    busy = Stream(mc_stub, auth)
    assert busy.send(fast=fast("mc-s-2")).fast.acknowledged
    with every_worker_busy(grpc_server) as release:
        busy._beats.put(pb.HeartbeatStreamRequest(fast=fast("mc-s-2", health=pb.DEGRADED)))  # needs the database
        wait_for(lambda: grpc_server.service_guard.admission.waiting, timeout=10,
                 what="the beat waiting for the database")
        started = time.monotonic()
        stopping = threading.Thread(target=grpc_server.stop, kwargs={"grace": 30})
        stopping.start()

        error = waiting.refused()
        assert (error.code(), error.details()) == (
            grpc.StatusCode.UNAVAILABLE, "server shutting down; open a new stream",
        )
        assert time.monotonic() - started < 5  # not the 30 s grace
        release.set()
        answer = next(busy.call)
    stopping.join(30)

    assert answer.fast.acknowledged
    assert MeetingController.objects.get(pk="mc-s-2").health_status == HealthStatus.DEGRADED
    error = busy.refused()
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert not stopping.is_alive() and time.monotonic() - started < 10
