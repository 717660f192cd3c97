"""Test helpers around the beat path: one beat written now, and a recorder reset between tests.

Production writes beats through controllers.heartbeats (the gRPC servicers); tests that want one beat in the
database at once, or a recorder that forgets what earlier tests taught it, use these.
"""

from __future__ import annotations

from controllers.grpc.ratelimit import BeatBuckets
from controllers.heartbeats import HeartbeatRecorder
from controllers.members import CONTROLLERS, HANDLERS, HealthChange, MemberKind
from controllers.services.beats import Beat, beats_record
from darktower.errors import NotFound


def controller_heartbeat(
    *,
    controller_id: str,
    reported: str,
    current_meetings: int | None = None,
    current_participants: int | None = None,
    max_meetings: int | None = None,
    max_participants: int | None = None,
    cpu_usage_percent: float | None = None,
    memory_usage_percent: float | None = None,
) -> HealthChange:
    """Write one heartbeat now (None leaves a column unchanged); NotFound when the controller is unknown."""
    values = {
        "current_meetings": current_meetings, "current_participants": current_participants,
        "max_meetings": max_meetings, "max_participants": max_participants,
        "cpu_usage_percent": cpu_usage_percent, "memory_usage_percent": memory_usage_percent,
    }
    return _one_beat(CONTROLLERS, Beat(controller_id, reported, values))


def handler_load_report(
    *,
    handler_id: str,
    reported: str,
    current_streams: int,
    cpu_usage_percent: float,
    memory_usage_percent: float,
    bandwidth_usage_percent: float,
) -> HealthChange:
    """Write one load report now; NotFound when the media handler is unknown."""
    values = {
        "current_streams": current_streams, "cpu_usage_percent": cpu_usage_percent,
        "memory_usage_percent": memory_usage_percent, "bandwidth_usage_percent": bandwidth_usage_percent,
    }
    return _one_beat(HANDLERS, Beat(handler_id, reported, values))


def _one_beat(kind: MemberKind, beat: Beat) -> HealthChange:
    outcomes = beats_record(kind=kind, beats=[beat])
    if not outcomes:
        raise NotFound(f"unknown {kind.label}; register first")
    return outcomes[0]


def recorder_reset(recorder: HeartbeatRecorder) -> None:
    """Forget every known id and pending beat of a running recorder (tests reset the database under it)."""
    with recorder._write_lock, recorder._lock:
        recorder._known.clear()
        recorder._owners.clear()
        recorder._pending.clear()
        recorder._loaded = False
        recorder._cache_paused_until = 0.0
        recorder._cache_failing = False


def beat_buckets_reset(buckets: BeatBuckets) -> None:
    """Empty the beat rate limit's buckets of this process (every member may burst again)."""
    with buckets._lock:
        buckets._buckets.clear()
