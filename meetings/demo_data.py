"""A realistic demo data set for development (`manage.py seed_demo`, loaded by `make run` on an empty database).

Every demo row has a stable natural key (a fixed email, meeting code, controller or handler id, or a UUID
derived from one), so loading again updates the same rows instead of adding new ones, and `reset` deletes
exactly the rows this module owns. Demo users sign in with DEMO_PASSWORD; it is published on purpose, which
is why the command refuses to run without DEBUG.

This is data setup, not a use case: it writes through the models directly, in one transaction.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.db import connection, transaction

from accounts.models import User
from audit.models import ActorType
from audit.services import audit_record, database_now
from controllers.models import HealthStatus, MediaHandler, MeetingController
from meetings.models import (
    LeaveReason,
    Meeting,
    MeetingAssignment,
    MeetingParticipant,
    MeetingStatus,
    Recording,
    RecordingStatus,
)

# Published on purpose (README, the command output); seed_demo runs only with DEBUG on.
DEMO_PASSWORD = "darktower-demo"
# Marks the audit rows this module writes. Reset keeps them: the audit trail is append-only.
DEMO_AUDIT_SOURCE = "seed_demo"
DEMO_GC_ID = "gc-demo"
_NAMESPACE = uuid.UUID("5d0c6f8e-3c4b-4f0e-9a57-d4e1f2a3b4c5")

ALICE, BOB, CAROL, DEV = (
    "alice@demo.darktower.local",
    "bob@demo.darktower.local",
    "carol@demo.darktower.local",
    "dev@demo.darktower.local",
)
DEMO_USERS = {ALICE: "Alice Archer", BOB: "Bob Baker", CAROL: "Carol Chen", DEV: "Dev Patel"}


@dataclass(frozen=True)
class _Controller:
    controller_id: str
    region: str
    health: str
    meetings: tuple[int, int]  # current, max
    participants: tuple[int, int]
    heartbeat_age_s: int
    cpu: float | None
    memory: float | None


@dataclass(frozen=True)
class _Handler:
    handler_id: str
    region: str
    health: str
    streams: tuple[int, int]
    bitrate_mbps: tuple[int, int]
    heartbeat_age_s: int
    cpu: float | None


@dataclass(frozen=True)
class _Participant:
    name: str
    email: str | None  # None: a guest
    role: str = "participant"
    joined_min_ago: int = 0  # minutes before the meeting's end (ended meetings) or now (active ones)
    left_min_ago: int | None = None
    leave_reason: str | None = None
    ip: str = "203.0.113.10"


@dataclass(frozen=True)
class _Meeting:
    code: str
    name: str
    host: str
    status: str
    region: str
    start_min: int  # scheduled start, minutes from now (negative: in the past)
    duration_min: int | None = None  # ended meetings
    controller_id: str | None = None
    settings: dict[str, bool] = field(default_factory=dict)
    participants: tuple[_Participant, ...] = ()


CONTROLLERS = (
    _Controller("mc-us-east-1-demo-01", "us-east-1", HealthStatus.HEALTHY, (142, 500), (1380, 5000), 2, 41.0, 55.5),
    _Controller("mc-us-east-1-demo-02", "us-east-1", HealthStatus.HEALTHY, (88, 500), (702, 5000), 4, 27.5, 48.0),
    _Controller("mc-us-east-1-demo-03", "us-east-1", HealthStatus.DEGRADED, (431, 500), (4410, 5000), 3, 91.2, 87.0),
    _Controller("mc-us-east-1-demo-04", "us-east-1", HealthStatus.DRAINING, (17, 500), (96, 5000), 5, 12.0, 40.1),
    _Controller("mc-eu-west-1-demo-01", "eu-west-1", HealthStatus.HEALTHY, (203, 1000), (2120, 10000), 1, 38.4, 51.0),
    _Controller("mc-eu-west-1-demo-02", "eu-west-1", HealthStatus.PENDING, (0, 1000), (0, 10000), 6, None, None),
    # Stopped heartbeating five minutes ago; the stale sweep marked it unhealthy.
    _Controller("mc-eu-west-1-demo-03", "eu-west-1", HealthStatus.UNHEALTHY, (64, 1000), (590, 10000), 300, 66.0, 71.3),
    _Controller("mc-ap-south-1-demo-01", "ap-south-1", HealthStatus.HEALTHY, (55, 300), (410, 3000), 2, 22.0, 35.0),
    _Controller("mc-ap-south-1-demo-02", "ap-south-1", HealthStatus.DEGRADED, (268, 300), (2790, 3000), 8, 88.5, 92.0),
)

HANDLERS = (
    _Handler("mh-us-east-1-demo-01", "us-east-1", HealthStatus.HEALTHY, (640, 2000), (3100, 10000), 1, 44.0),
    _Handler("mh-us-east-1-demo-02", "us-east-1", HealthStatus.DEGRADED, (1870, 2000), (9300, 10000), 2, 93.5),
    _Handler("mh-eu-west-1-demo-01", "eu-west-1", HealthStatus.HEALTHY, (910, 4000), (4200, 20000), 1, 37.0),
    _Handler("mh-eu-west-1-demo-02", "eu-west-1", HealthStatus.UNHEALTHY, (0, 4000), (0, 20000), 420, None),
    _Handler("mh-ap-south-1-demo-01", "ap-south-1", HealthStatus.PENDING, (0, 1500), (0, 8000), 7, None),
)

_ENDED = LeaveReason.MEETING_ENDED
MEETINGS = (
    _Meeting(
        "demo-standup", "Daily standup", ALICE, MeetingStatus.ACTIVE, "us-east-1", start_min=-12,
        controller_id="mc-us-east-1-demo-01", settings={"allow_guests": True},
        participants=(
            _Participant("Alice Archer", ALICE, "host", joined_min_ago=12),
            _Participant("Bob Baker", BOB, joined_min_ago=11, ip="198.51.100.23"),
            _Participant("Carol Chen", CAROL, joined_min_ago=10, left_min_ago=3, leave_reason=LeaveReason.VOLUNTARY),
            _Participant("Guest (phone)", None, "guest", joined_min_ago=8, ip="2001:db8::42"),
        ),
    ),
    _Meeting(
        "demo-eu-sync", "EU customer sync", CAROL, MeetingStatus.ACTIVE, "eu-west-1", start_min=-35,
        controller_id="mc-eu-west-1-demo-01", settings={"require_auth": True, "waiting_room_enabled": True},
        participants=(
            _Participant("Carol Chen", CAROL, "host", joined_min_ago=35),
            _Participant("Dev Patel", DEV, joined_min_ago=33, ip="198.51.100.77"),
            _Participant(
                "Bob Baker", BOB, joined_min_ago=30, left_min_ago=10, leave_reason=LeaveReason.CONNECTION_LOST
            ),
        ),
    ),
    _Meeting("demo-planning", "Quarterly planning", ALICE, MeetingStatus.SCHEDULED, "us-east-1", start_min=24 * 60),
    _Meeting(
        "demo-design-review", "Design review", DEV, MeetingStatus.SCHEDULED, "ap-south-1", start_min=180,
        settings={"require_auth": True, "allow_recording": True},
    ),
    _Meeting(
        "demo-retro", "Sprint retrospective", BOB, MeetingStatus.ENDED, "us-east-1", start_min=-26 * 60,
        duration_min=55, controller_id="mc-us-east-1-demo-02", settings={"allow_recording": True},
        participants=(
            _Participant("Bob Baker", BOB, "host", joined_min_ago=55, left_min_ago=0, leave_reason=_ENDED),
            _Participant("Alice Archer", ALICE, joined_min_ago=54, left_min_ago=0, leave_reason=_ENDED),
            _Participant(
                "Dev Patel", DEV, joined_min_ago=50, left_min_ago=20, leave_reason=LeaveReason.VOLUNTARY,
                ip="198.51.100.77",
            ),
        ),
    ),
    _Meeting(
        "demo-all-hands", "All hands", ALICE, MeetingStatus.ENDED, "ap-south-1", start_min=-3 * 24 * 60,
        duration_min=60, controller_id="mc-ap-south-1-demo-01", settings={"allow_guests": True},
        participants=(
            _Participant("Alice Archer", ALICE, "host", joined_min_ago=60, left_min_ago=0, leave_reason=_ENDED),
            _Participant("Carol Chen", CAROL, joined_min_ago=58, left_min_ago=0, leave_reason=_ENDED),
            _Participant(
                "Guest (heckler)", None, "guest", joined_min_ago=40, left_min_ago=38,
                leave_reason=LeaveReason.KICKED, ip="203.0.113.99",
            ),
        ),
    ),
)
RECORDED_MEETING = "demo-retro"


@dataclass(frozen=True)
class DemoSummary:
    """The demo rows present after a load (counted in the database), and what the load changed."""

    users: int
    meetings: dict[str, int]  # by status
    participants: int
    recordings: int
    meeting_controllers: dict[str, int]  # by health status
    media_handlers: dict[str, int]  # by health status
    active_assignments: int
    created: int  # rows inserted by this load; 0 when the demo set was already complete
    deleted: int  # rows removed by reset
    audit_entries: int  # audit rows written by this load (one per created user, meeting, controller, ...)


def demo_data_load(*, reset: bool = False) -> DemoSummary:
    """Load the demo set (idempotent). With reset, first delete every demo row but the audit trail, then load it
    afresh."""
    with transaction.atomic():
        with connection.cursor() as cursor:
            # Two loads at once (two `make run`s on one database) would race on the natural keys.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('meetings.demo_data'))")
        deleted = _demo_delete() if reset else 0
        loader = _Loader(now=database_now())
        loader.load()
        return _summary(created=loader.created, deleted=deleted, audit_entries=loader.audit_entries)


def _demo_delete() -> int:
    """Delete the rows this module owns, found by their natural keys. Children go by CASCADE. Their audit rows
    stay (audit_logs refuses DELETE); a deleted user's rows lose their actor by the foreign key's SET NULL."""
    deleted = Meeting.objects.filter(meeting_code__in=[m.code for m in MEETINGS]).delete()[0]
    deleted += MeetingController.objects.filter(controller_id__in=[c.controller_id for c in CONTROLLERS]).delete()[0]
    deleted += MediaHandler.objects.filter(handler_id__in=[h.handler_id for h in HANDLERS]).delete()[0]
    deleted += User.objects.filter(email__in=DEMO_USERS).delete()[0]
    return deleted


def _participant_uuid(meeting_code: str, name: str) -> uuid.UUID:
    return uuid.uuid5(_NAMESPACE, f"participant/{meeting_code}/{name}")


class _Loader:
    def __init__(self, *, now: datetime) -> None:
        self.now = now
        self.created = 0
        self.audit_entries = 0
        self.users: dict[str, User] = {}
        self.controllers: dict[str, MeetingController] = {}

    def load(self) -> None:
        for email, display_name in DEMO_USERS.items():
            self._user(email, display_name)
        for controller in CONTROLLERS:
            self._controller(controller)
        for handler in HANDLERS:
            self._handler(handler)
        for meeting in MEETINGS:
            self._meeting(meeting)

    def _audit(self, **entry: Any) -> None:
        metadata = {"source": DEMO_AUDIT_SOURCE, **entry.pop("metadata", {})}
        audit_record(metadata=metadata, **entry)
        self.audit_entries += 1

    def _ago(self, **delta: float) -> datetime:
        return self.now - timedelta(**delta)

    def _user(self, email: str, display_name: str) -> None:
        user, created = User.objects.update_or_create(
            email=email, defaults={"display_name": display_name, "is_active": True}
        )
        if created:
            user.set_password(DEMO_PASSWORD)
            user.save(update_fields=["password"])
            self.created += 1
            self._audit(
                event_type="user_created", action="create", target_type="user", target_id=str(user.user_id)
            )
        self.users[email] = user

    def _controller(self, spec: _Controller) -> None:
        host = f"{spec.controller_id.removeprefix('mc-')}.demo.internal"
        controller, created = MeetingController.objects.update_or_create(
            controller_id=spec.controller_id,
            defaults={
                "region": spec.region,
                "endpoint": f"grpc://{host}:50052",
                "grpc_endpoint": f"grpc://{host}:50052",
                "webtransport_endpoint": None if spec.health == HealthStatus.PENDING else f"https://{host}:4433",
                "current_meetings": spec.meetings[0],
                "max_meetings": spec.meetings[1],
                "current_participants": spec.participants[0],
                "max_participants": spec.participants[1],
                "cpu_usage_percent": spec.cpu,
                "memory_usage_percent": spec.memory,
                "health_status": spec.health,
                "last_heartbeat_at": self._ago(seconds=spec.heartbeat_age_s),
                "version": "1.4.2" if spec.health != HealthStatus.PENDING else "1.5.0-rc1",
                "metadata": {"zone": f"{spec.region}a"},
            },
        )
        self.controllers[spec.controller_id] = controller
        if created:
            self.created += 1
            target = {"target_type": "meeting_controller", "target_id": spec.controller_id}
            self._audit(event_type="controller_registered", action="register", actor_type=ActorType.SERVICE, **target)
            if spec.health == HealthStatus.UNHEALTHY:
                self._audit(
                    event_type="controller_unhealthy", action="mark_unhealthy",
                    metadata={"reason": "heartbeat_stale"}, **target,
                )
            if spec.health == HealthStatus.DRAINING:
                self._audit(
                    event_type="controller_drain_started", action="drain", actor_type=ActorType.USER,
                    actor_user_id=self.users[CAROL].user_id, **target,
                )

    def _handler(self, spec: _Handler) -> None:
        host = f"{spec.handler_id.removeprefix('mh-')}.demo.internal"
        _, created = MediaHandler.objects.update_or_create(
            handler_id=spec.handler_id,
            defaults={
                "region": spec.region,
                "endpoint": f"grpc://{host}:50053",
                "grpc_endpoint": f"grpc://{host}:50053",
                "webtransport_endpoint": None if spec.health == HealthStatus.PENDING else f"https://{host}:4434",
                "current_streams": spec.streams[0],
                "max_streams": spec.streams[1],
                "current_bitrate_mbps": spec.bitrate_mbps[0],
                "max_bitrate_mbps": spec.bitrate_mbps[1],
                "cpu_usage_percent": spec.cpu,
                "health_status": spec.health,
                "last_heartbeat_at": self._ago(seconds=spec.heartbeat_age_s),
                "metadata": {"zone": f"{spec.region}b"},
            },
        )
        if created:
            self.created += 1
            self._audit(
                event_type="media_handler_registered", action="register", actor_type=ActorType.SERVICE,
                target_type="media_handler", target_id=spec.handler_id,
            )

    def _meeting(self, spec: _Meeting) -> None:
        start = self.now + timedelta(minutes=spec.start_min)
        ended_at = start + timedelta(minutes=spec.duration_min) if spec.duration_min is not None else None
        running = spec.status != MeetingStatus.SCHEDULED
        assigned = spec.status == MeetingStatus.ACTIVE
        host = self.users[spec.host]
        meeting, created = Meeting.objects.update_or_create(
            meeting_code=spec.code,
            defaults={
                "display_name": spec.name,
                "created_by_user": host,
                "status": spec.status,
                "scheduled_start_time": start,
                "actual_start_time": start if running else None,
                "ended_at": ended_at,
                "assigned_controller_id": spec.controller_id if assigned else None,
                "assigned_region": spec.region if assigned else None,
                "enable_e2e_encryption": True,
                "require_auth": spec.settings.get("require_auth", False),
                "allow_recording": spec.settings.get("allow_recording", False),
                "waiting_room_enabled": spec.settings.get("waiting_room_enabled", False),
                "allow_guests": spec.settings.get("allow_guests", False),
                "max_participants": 100,
            },
        )
        if created:
            self.created += 1
            target = {"target_type": "meeting", "target_id": str(meeting.meeting_id)}
            actor = {"actor_type": ActorType.USER, "actor_user_id": host.user_id}
            self._audit(event_type="meeting_created", action="create", **actor, **target)
            if running:
                self._audit(event_type="meeting_started", action="start", **actor, **target)
            if spec.status == MeetingStatus.ENDED:
                self._audit(event_type="meeting_ended", action="end", **target)
        if spec.controller_id:
            self._assignment(meeting, spec, start=start, ended_at=ended_at)
        # Times are relative to the meeting's end (ended meetings) or to now (active ones).
        anchor = ended_at or self.now
        for participant in spec.participants:
            self._participant(meeting, spec.code, participant, anchor)
        if spec.code == RECORDED_MEETING and ended_at is not None:
            self._recording(meeting, start=start, ended_at=ended_at)

    def _assignment(self, meeting: Meeting, spec: _Meeting, *, start: datetime, ended_at: datetime | None) -> None:
        assert spec.controller_id is not None  # _meeting assigns only the meetings that name a controller
        _, created = MeetingAssignment.objects.update_or_create(
            meeting=meeting,
            region=spec.region,
            meeting_controller=self.controllers[spec.controller_id],
            defaults={
                "assigned_at": start,
                "assigned_by_gc_id": DEMO_GC_ID,
                "ended_at": ended_at,
                "end_reason": "meeting_ended" if ended_at else None,
            },
        )
        self.created += created

    def _participant(self, meeting: Meeting, code: str, spec: _Participant, anchor: datetime) -> None:
        joined = anchor - timedelta(minutes=spec.joined_min_ago)
        left = anchor - timedelta(minutes=spec.left_min_ago) if spec.left_min_ago is not None else None
        _, created = MeetingParticipant.objects.update_or_create(
            meeting=meeting,
            participant_id=_participant_uuid(code, spec.name),
            defaults={
                "user": self.users[spec.email] if spec.email else None,
                "display_name": spec.name,
                "role": spec.role,
                "joined_at": joined,
                "left_at": left,
                "leave_reason": spec.leave_reason,
                "ip_address": spec.ip,
                "user_agent": "Mozilla/5.0 (X11; Linux x86_64) Chrome/131.0 DarkTowerWeb/2.3",
                "client_version": "web-2.3.0",
                "total_duration_seconds": int(((left or self.now) - joined).total_seconds()),
            },
        )
        self.created += created

    def _recording(self, meeting: Meeting, *, start: datetime, ended_at: datetime) -> None:
        recording_id = uuid.uuid5(_NAMESPACE, f"recording/{meeting.meeting_code}")
        recording, created = Recording.objects.update_or_create(
            recording_id=recording_id,
            defaults={
                "meeting": meeting,
                "started_by_user": meeting.created_by_user,
                "started_at": start + timedelta(minutes=2),
                "ended_at": ended_at,
                "duration_seconds": int((ended_at - start).total_seconds()) - 120,
                "file_size_bytes": 1_284_517_120,
                "storage_bucket": "darktower-recordings-demo",
                "storage_path": f"{meeting.meeting_code}/{recording_id}.webm",
                "video_codec": "VP9",
                "audio_codec": "Opus",
                "resolution": "1920x1080",
                "status": RecordingStatus.READY,
            },
        )
        if created:
            self.created += 1
            self._audit(
                event_type="recording_ready", action="process", target_type="recording",
                target_id=str(recording.recording_id),
            )


def _summary(*, created: int, deleted: int, audit_entries: int) -> DemoSummary:
    codes = [m.code for m in MEETINGS]
    meetings = Meeting.objects.filter(meeting_code__in=codes)
    return DemoSummary(
        users=User.objects.filter(email__in=DEMO_USERS).count(),
        meetings=dict(Counter(meetings.values_list("status", flat=True))),
        participants=MeetingParticipant.objects.filter(meeting__in=meetings).count(),
        recordings=Recording.objects.filter(meeting__in=meetings).count(),
        meeting_controllers=dict(
            Counter(
                MeetingController.objects.filter(
                    controller_id__in=[c.controller_id for c in CONTROLLERS]
                ).values_list("health_status", flat=True)
            )
        ),
        media_handlers=dict(
            Counter(
                MediaHandler.objects.filter(handler_id__in=[h.handler_id for h in HANDLERS]).values_list(
                    "health_status", flat=True
                )
            )
        ),
        active_assignments=MeetingAssignment.objects.filter(meeting__in=meetings, ended_at__isnull=True).count(),
        created=created,
        deleted=deleted,
        audit_entries=audit_entries,
    )
