"""Fixtures of the health-model tests. Time is the database's: inside a test's transaction now() does not move,
so "time passes" by shifting the rows' timestamps back (`advance`)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
from django.db.models import F

from controllers.models import HealthTransition, MediaHandler, MeetingController, SweepState

THRESHOLD = 30
GRACE = 60
HOLD_DOWN = 60
SWEEP_INTERVAL = 5


@pytest.fixture(autouse=True)
def health_settings(settings):
    settings.HEARTBEAT_STALE_THRESHOLD_SECONDS = THRESHOLD
    settings.PENDING_STARTUP_GRACE_SECONDS = GRACE
    settings.UNHEALTHY_HOLD_DOWN_SECONDS = HOLD_DOWN
    settings.UNHEALTHY_RECOVERY_HEARTBEATS = 2
    settings.STALE_SWEEP_INTERVAL_SECONDS = SWEEP_INTERVAL
    settings.DISRUPTION_MAX_STALE_SHARE = 0.55
    settings.DISRUPTION_MIN_REGION_SIZE = 10
    return settings


@pytest.fixture
def advance(db) -> Callable[[float], None]:
    """Let `seconds` pass: every fleet timestamp and transition moves back by that much. The sweep's own
    last run is forgotten, so moving time does not look like a sweep gap (tests of the gap set it themselves)."""

    def advance(seconds: float) -> None:
        delta = timedelta(seconds=seconds)
        for model in (MeetingController, MediaHandler):
            model.objects.update(
                last_heartbeat_at=F("last_heartbeat_at") - delta,
                health_changed_at=F("health_changed_at") - delta,
                unhealthy_since=F("unhealthy_since") - delta,
                hold_down_until=F("hold_down_until") - delta,
            )
        HealthTransition.objects.update(created_at=F("created_at") - delta)
        SweepState.objects.all().delete()

    return advance
