"""Beat streams: StreamHeartbeats carries an MC's beats on one long-lived stream.

The stream is authenticated when it opens, then each beat is served exactly as its unary call (FastHeartbeat,
ComprehensiveHeartbeat) would be, token check and rate limit included, on the loop when it needs no I/O; a refused
beat ends the stream with that call's status. It saves what a call costs around the beat (a new HTTP/2 stream,
headers, the handler lookup). A stream does not
outlive its token: the server ends it with UNAUTHENTICATED at the token's expiry (with the clock skew allowed)
even when no beat comes, and with DEADLINE_EXCEEDED after GRPC_STREAM_IDLE_TIMEOUT_SECONDS without a beat
(UNAUTHENTICATED instead when the process knows the token was revoked), so a revoked token's stream ends at its
next beat or within the idle timeout. One timer per stream watches both; a beat only notes its time.

Each beat goes through the guard of its unary method (controllers.grpc.guard.MethodGuard): the same
authentication, scope, rate limit and error mapping as the unary call.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf.message import Message

from accounts.blacklist import blacklist_cached
from accounts.tokens import TokenClaims
from controllers.grpc.guard import MALFORMED, Behaviour, MethodGuard, Refused, call_end, refusal, tolerant
from darktower import errors
from darktower.conf import hot_setting


@dataclass(frozen=True)
class BeatStream:
    """A stream method whose messages each carry one beat of a unary method: the message's `oneof` field names
    the kind, `beats` maps each kind to (the unary method's path, its blocking servicer method). Every beat of
    a stream must name the same member (`member_field` of the beat); `response` wraps each answer."""

    oneof: str
    beats: Mapping[str, tuple[str, Behaviour]]
    member_field: str
    response: type[Message]


class OpenStream:
    """A stream being served: whether it is waiting for its client's next beat, and whether it must end (the
    server stopping, its token expiring, its client silent): then it ends after the beat it is serving, if any,
    with `ending` (None: the server is stopping). `beat_at`: the event loop's time of its last beat."""

    __slots__ = ("beat_at", "closing", "ending", "task", "waiting")

    def __init__(self, task: asyncio.Task[Any], now: float = 0.0) -> None:
        self.task = task
        self.waiting = False
        self.closing = False
        self.ending: Refused | None = None
        self.beat_at = now

    def end(self, refused: Refused) -> None:
        """End the stream with `refused`: at once when it waits for a beat, else after the one it serves."""
        if self.closing:
            return
        self.ending = refused
        self.closing = True
        if self.waiting:
            self.task.cancel()


SHUTTING_DOWN = "server shutting down; open a new stream"
IDLE = "no beat within GRPC_STREAM_IDLE_TIMEOUT_SECONDS; open a new stream"


class _StreamDeadlines:
    """Ends a stream at its token's expiry (UNAUTHENTICATED) or after GRPC_STREAM_IDLE_TIMEOUT_SECONDS without a
    beat (DEADLINE_EXCEEDED: the client went quiet, not the server away; UNAUTHENTICATED when this process
    already knows the token was revoked). One timer per stream, re-armed when it fires early; the beats
    themselves only note their time, so a steady stream costs nothing more per beat."""

    __slots__ = ("_claims", "_handle", "_idle", "_loop", "_state")

    def __init__(self, state: OpenStream, claims: TokenClaims, loop: asyncio.AbstractEventLoop) -> None:
        self._state, self._claims, self._loop = state, claims, loop
        self._idle = float(hot_setting("GRPC_STREAM_IDLE_TIMEOUT_SECONDS"))
        self._handle: asyncio.TimerHandle | None = None
        self._arm()

    def _expires_in(self) -> float:
        # Wall clock, as the token's exp is; the skew allowed is the one every verification allows.
        return self._claims.expires_at_unix + hot_setting("JWT_CLOCK_SKEW_SECONDS") - time.time()

    def _arm(self) -> None:
        idle_in = self._state.beat_at + self._idle - self._loop.time()
        self._handle = self._loop.call_later(max(0.0, min(self._expires_in(), idle_in)), self._check)

    def _check(self) -> None:
        state = self._state
        if state.closing:
            return
        if self._expires_in() < 0:
            state.end(Refused(grpc.StatusCode.UNAUTHENTICATED, "token expired"))
        elif self._loop.time() - state.beat_at >= self._idle:
            if blacklist_cached(self._claims.jti):
                state.end(Refused(grpc.StatusCode.UNAUTHENTICATED, "token revoked"))
            else:
                state.end(Refused(grpc.StatusCode.DEADLINE_EXCEEDED, IDLE))
        else:
            self._arm()

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()


def guarded_stream(method: str, spec: BeatStream, guards: Mapping[str, MethodGuard],
                   handler: grpc.RpcMethodHandler,
                    open_streams: set[OpenStream]) -> grpc.RpcMethodHandler:
    """A stream of beats, each served by its unary method's guard, answered in order. The stream is
    authenticated when it opens; a refused beat ends it with the status its unary call would get."""
    opening = next(iter(guards.values()))
    kinds = ", ".join(spec.beats)

    async def stream(requests: AsyncIterator[Any], context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        metadata = context.invocation_metadata() or ()
        member: str | None = None
        loop = asyncio.get_running_loop()
        state = OpenStream(asyncio.current_task(), loop.time())  # type: ignore[arg-type]
        open_streams.add(state)
        deadlines: _StreamDeadlines | None = None
        try:
            opened = await opening.authenticate(metadata)
            state.beat_at = loop.time()
            deadlines = _StreamDeadlines(state, opened, loop)
            beats = aiter(requests)
            while not state.closing:
                state.waiting = True
                try:
                    message = await anext(beats)
                except StopAsyncIteration:
                    return
                except asyncio.CancelledError:
                    if not state.closing:
                        raise
                    break  # end_streams (the server is stopping) or the stream's deadlines
                state.waiting = False
                state.beat_at = loop.time()
                try:
                    if message is MALFORMED:
                        raise errors.InvalidInput("malformed request message")
                    kind = message.WhichOneof(spec.oneof)
                    if kind is None:
                        raise errors.InvalidInput(f"{spec.oneof}: must be one of {kinds}")
                    beat = getattr(message, kind)
                    named = getattr(beat, spec.member_field)
                    if member is None:
                        member = named
                    elif named != member:
                        raise errors.InvalidInput(
                            f"{spec.member_field}: every beat on a stream must name the member of its first beat"
                        )
                except errors.InvalidInput as exc:
                    raise refusal(method, exc) from None
                yield spec.response(**{kind: await guards[kind].serve(beat, metadata, opened)})
            raise state.ending or Refused(grpc.StatusCode.UNAVAILABLE, SHUTTING_DOWN)
        except Refused as refused:
            await call_end(context, refused)
        finally:
            if deadlines is not None:
                deadlines.cancel()
            open_streams.discard(state)

    return grpc.stream_stream_rpc_method_handler(
        stream, request_deserializer=tolerant(handler.request_deserializer),
        response_serializer=handler.response_serializer,
    )
