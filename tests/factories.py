"""Plain factory functions for test data: keyword arguments, sensible defaults, saved rows."""

from __future__ import annotations

import itertools
from typing import Any

from django.conf import settings
from django.utils import timezone

from accounts.models import User
from accounts.services.api_keys import CreatedApiKey, api_key_create
from accounts.services.users import user_scopes
from accounts.tokens import token_issue
from controllers.models import HealthStatus, MediaHandler, MeetingController
from meetings.models import Meeting, Recording

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


def user_token(user: User, *, scopes: Any = None) -> str:
    """A user access token as login issues it (the user's scopes unless given)."""
    return token_issue(
        subject=str(user.pk), audience=settings.JWT_API_AUDIENCE,
        scopes=user_scopes(user) if scopes is None else scopes, lifetime_seconds=600,
    ).token


def make_api_key(*, user: User, scopes: Any = ("meetings:read",), **extra: Any) -> CreatedApiKey:
    """A CreatedApiKey (api_key row, raw_key) through the service, as POST /api/v1/api-keys makes it."""
    return api_key_create(user=user, name=extra.pop("name", "test key"), scopes=scopes, **extra)


def make_recording(*, meeting: Meeting, **extra: Any) -> Recording:
    extra.setdefault("started_at", timezone.now())
    extra.setdefault("storage_bucket", "test-bucket")
    extra.setdefault("storage_path", f"meetings/{meeting.pk}/recordings/{next(_sequence)}")
    return Recording.objects.create(meeting=meeting, started_by_user=meeting.created_by_user, **extra)
