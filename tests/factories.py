"""Plain factory functions for test data: keyword arguments, sensible defaults, saved rows."""

from __future__ import annotations

import itertools
from typing import Any

from accounts.models import User
from controllers.models import HealthStatus, MediaHandler, MeetingController
from meetings.models import Meeting

_sequence = itertools.count(1)


def make_user(*, email: str | None = None, password: str = "correct-horse-battery", **extra: Any) -> User:
    number = next(_sequence)
    extra.setdefault("display_name", f"User {number}")
    return User.objects.create_user(email or f"user{number}@example.test", password, **extra)


def make_controller(
    *, controller_id: str | None = None, region: str = "us-east-1", health: str = HealthStatus.HEALTHY, **extra: Any
) -> MeetingController:
    number = next(_sequence)
    controller_id = controller_id or f"mc-{region}-{number:04d}"
    endpoint = extra.pop("grpc_endpoint", f"grpc://mc{number}.{region}.internal:50052")
    defaults: dict[str, Any] = {
        "endpoint": endpoint,
        "grpc_endpoint": endpoint,
        "webtransport_endpoint": f"https://mc{number}.{region}.internal:4433",
        "max_meetings": 100,
        "max_participants": 1000,
    }
    defaults.update(extra)
    return MeetingController.objects.create(
        controller_id=controller_id, region=region, health_status=health, **defaults
    )


def make_handler(
    *, handler_id: str | None = None, region: str = "us-east-1", health: str = HealthStatus.HEALTHY, **extra: Any
) -> MediaHandler:
    number = next(_sequence)
    endpoint = extra.pop("grpc_endpoint", f"grpc://mh{number}.{region}.internal:50053")
    defaults: dict[str, Any] = {
        "endpoint": endpoint,
        "grpc_endpoint": endpoint,
        "webtransport_endpoint": f"https://mh{number}.{region}.internal:4433",
        "max_streams": 500,
        "max_bitrate_mbps": 1000,
    }
    defaults.update(extra)
    return MediaHandler.objects.create(
        handler_id=handler_id or f"mh-{region}-{number:04d}", region=region, health_status=health, **defaults
    )


def make_meeting(*, host: User | None = None, **extra: Any) -> Meeting:
    number = next(_sequence)
    extra.setdefault("display_name", f"Meeting {number}")
    extra.setdefault("meeting_code", f"test-{number:06d}")
    return Meeting.objects.create(created_by_user=host, **extra)
