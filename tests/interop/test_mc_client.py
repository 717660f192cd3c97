"""The GC -> MC AssignMeetingWithMh call (controllers.mc_client) against an MC that checks our token as Dark
Tower's own MC does (tests/interop/original.py): JWKS from our live server, no `aud`, scope and service_type."""

from __future__ import annotations

import socket
import threading
import uuid

import pytest
from django.conf import settings

from accounts.services.service_tokens import gc_service_token, gc_service_token_forget
from accounts.tokens import token_issue
from controllers.mc_client import McCallOutcome, McChannels, MediaHandlerChoice, mc_assign_meeting
from darktower.metrics import REGISTRY
from tests.interop.original import McState, OriginalMc

HANDLERS = (
    MediaHandlerChoice("mh-1", "https://mh-1.example:4434", "http://mh-1.example:50053"),
    MediaHandlerChoice("mh-2", "https://mh-2.example:4434", "http://mh-2.example:50053"),
)


@pytest.fixture(autouse=True)
def fresh_gc_token():
    gc_service_token_forget()
    yield
    gc_service_token_forget()


@pytest.fixture
def jwks_url(live_server) -> str:
    return f"{live_server.url}/.well-known/jwks.json"


@pytest.fixture
def mc(jwks_url):
    peer = OriginalMc(jwks_url).start()
    yield peer
    peer.stop()


@pytest.fixture
def channels():
    pool = McChannels(8)
    yield pool
    pool.close_all()


def assign(mc, channels, *, meeting_id=None, handlers=HANDLERS, token=None, timeout=5.0):
    return mc_assign_meeting(
        endpoint=mc.endpoint, meeting_id=meeting_id or uuid.uuid4(), media_handlers=handlers,
        token=token or gc_service_token(), requesting_gc_id=settings.GC_ID, timeout_seconds=timeout,
        channels=channels,
    )


def calls(outcome: str, reason: str) -> float:
    return REGISTRY.get_sample_value("darktower_mc_assign_calls_total", {"outcome": outcome, "reason": reason}) or 0


def test_an_original_mc_accepts_the_gcs_call_with_our_token(mc, channels):
    meeting_id = uuid.uuid4()
    before = calls("accepted", "")
    answer = assign(mc, channels, meeting_id=meeting_id)
    assert answer.outcome is McCallOutcome.ACCEPTED and answer.accepted
    (call,) = mc.calls
    assert call.meeting_id == str(meeting_id)
    assert call.requesting_gc_id == settings.GC_ID
    assert call.mh_assignments == (
        ("mh-1", "https://mh-1.example:4434", "http://mh-1.example:50053"),
        ("mh-2", "https://mh-2.example:4434", "http://mh-2.example:50053"),
    )
    assert call.claims.service_type == "global-controller"
    assert call.claims.has_scope("service.write.mc")
    assert str(meeting_id) in mc.state.meetings
    assert calls("accepted", "") == before + 1


def test_the_gc_token_is_reused_until_it_nears_expiry(mc, channels):
    first = gc_service_token()
    assert gc_service_token() == first
    assert assign(mc, channels).accepted
    assert mc.jwks.fetches == 1


@pytest.mark.parametrize(("state", "handlers", "reason"), [
    (McState(draining=True), HANDLERS, "draining"),
    (McState(max_meetings=0), HANDLERS, "at_capacity"),
    (McState(max_participants=15, current_participants=6), HANDLERS, "at_capacity"),
    (McState(), (), "unhealthy"),
    (McState(), (MediaHandlerChoice("mh-1", "https://mh-1.example:4434", ""),), "unhealthy"),
])
def test_each_rejection_reason_comes_back_named(mc, channels, state, handlers, reason):
    mc.state = state
    before = calls("rejected", reason)
    answer = assign(mc, channels, handlers=handlers)
    assert (answer.outcome, answer.reason) == (McCallOutcome.REJECTED, reason)
    assert calls("rejected", reason) == before + 1


def test_telling_an_mc_twice_of_one_meeting_is_refused_by_it(mc, channels):
    # The original MC is not idempotent here: the GC must tell an MC of a meeting once.
    meeting_id = uuid.uuid4()
    assert assign(mc, channels, meeting_id=meeting_id).accepted
    answer = assign(mc, channels, meeting_id=meeting_id)
    assert (answer.outcome, answer.reason) == (McCallOutcome.REJECTED, "unhealthy")
    assert str(meeting_id) not in mc.state.meetings


def test_a_token_with_an_audience_is_refused_by_the_mc(mc, channels):
    token = token_issue(subject="gc", audience=settings.JWT_SERVICE_AUDIENCE, scopes=["service.write.mc"],
                        lifetime_seconds=300, extra_claims={"service_type": "global-controller"}).token
    answer = assign(mc, channels, token=token)
    assert (answer.outcome, answer.reason) == (McCallOutcome.FAILED, "unauthenticated")
    assert mc.calls == []


def test_a_meeting_controllers_own_token_is_not_the_gcs(mc, channels):
    token = token_issue(subject="svc-mc", audience=None, scopes=["service.write.mc", "service.write.gc"],
                        lifetime_seconds=300, extra_claims={"service_type": "meeting-controller"}).token
    answer = assign(mc, channels, token=token)
    assert (answer.outcome, answer.reason) == (McCallOutcome.FAILED, "permission_denied")
    assert mc.calls == []


def test_a_slow_mc_times_out_within_the_deadline(mc, channels):
    release = threading.Event()
    mc.before_answer = lambda call: release.wait(10)
    try:
        answer = assign(mc, channels, timeout=0.3)
    finally:
        release.set()
    assert (answer.outcome, answer.reason) == (McCallOutcome.FAILED, "deadline_exceeded")
    assert answer.seconds < 5


def test_an_unreachable_endpoint_fails_fast(channels):
    with socket.socket() as listener:  # a port that was free a moment ago and has no listener now
        listener.bind(("127.0.0.1", 0))
        port = listener.getsockname()[1]
    answer = mc_assign_meeting(
        endpoint=f"http://127.0.0.1:{port}", meeting_id=uuid.uuid4(), media_handlers=HANDLERS, token="x",
        requesting_gc_id="gc", timeout_seconds=5.0, channels=channels,
    )
    assert (answer.outcome, answer.reason) == (McCallOutcome.FAILED, "unavailable")


def test_channels_are_reused_per_endpoint_and_bounded():
    pool = McChannels(2)
    try:
        first = pool.acquire("http://127.0.0.1:1")
        pool.release(first)
        assert pool.acquire("http://127.0.0.1:1") is first
        pool.release(first)
        in_use = pool.acquire("http://127.0.0.1:2")
        third = pool.acquire("http://127.0.0.1:3")  # evicts :1, the least recently used, which nobody uses
        assert len(pool) == 2
        assert pool.acquire("http://127.0.0.1:1") is not first
        # :2 was evicted by that while in use: still usable until released.
        assert in_use.evicted and in_use.users == 1
        pool.release(in_use)
        pool.release(third)
    finally:
        pool.close_all()
