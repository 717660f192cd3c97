"""The periodic jobs, as rows of django-celery-beat's tables (the beat runs the DatabaseScheduler).

`manage.py setup_schedules` applies this live table. audit migration 0002 holds a frozen copy of it (and of
the apply function), because a migration must not import code that changes later: add a new job here and,
for it to exist after `migrate` on a fresh database, in a new data migration too.

Operators tune the jobs in the admin; `setup_schedules` puts the values below back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django_celery_beat.models import CrontabSchedule, IntervalSchedule, PeriodicTask


@dataclass(frozen=True)
class Schedule:
    name: str
    task: str
    description: str
    every_seconds: int | None = None
    # crontab fields (UTC) when every_seconds is None
    minute: str = "0"
    hour: str = "*"
    # Frequent jobs drop stale messages: after a worker outage one sweep runs, not a backlog of hundreds.
    expire_seconds: int | None = None


def schedules_table() -> list[Schedule]:
    sweep_every = settings.STALE_SWEEP_INTERVAL_SECONDS
    return [
        Schedule(
            name="controllers.sweep_stale",
            task="controllers.tasks.sweep_stale",
            description="Mark controllers and media handlers with stale heartbeats unhealthy.",
            every_seconds=sweep_every,
            expire_seconds=sweep_every,
        ),
        Schedule(
            name="controllers.enforce_drain_deadlines",
            task="controllers.tasks.enforce_drain_deadlines",
            description="Move or end the remaining meetings of draining controllers past their deadline.",
            every_seconds=30,
            expire_seconds=30,
        ),
        Schedule(
            name="audit.relay_outbox",
            task="audit.tasks.relay_outbox",
            description="Publish pending outbox events to Redis (stream and controller capacity).",
            every_seconds=2,
            expire_seconds=2,
        ),
        Schedule(
            name="meetings.end_unhealthy_assignments",
            task="meetings.tasks.end_unhealthy_assignments",
            description="End active assignments on unhealthy controllers so the next join reassigns.",
            every_seconds=60,
            expire_seconds=60,
        ),
        Schedule(
            name="darktower.retention",
            task="darktower.tasks.run_retention",
            description="Delete data past its retention period (meetings, recordings, assignments, keys, outbox rows).",
            minute="20",
            hour="3",
        ),
        Schedule(
            name="audit.maintain_partitions",
            task="audit.tasks.maintain_audit_partitions",
            description="Create the next months' audit_logs partitions and drop those past retention.",
            minute="0",
            hour="3",
        ),
    ]


def schedules_apply(table: list[Schedule] | None = None) -> list[str]:
    """Create or update one PeriodicTask per entry, by name (idempotent). Returns the names applied."""
    names = []
    for entry in schedules_table() if table is None else table:
        schedule: dict[str, Any] = {"interval": None, "crontab": None}
        if entry.every_seconds:
            schedule["interval"] = _first_or_create(IntervalSchedule, every=entry.every_seconds, period="seconds")
        else:
            schedule["crontab"] = _first_or_create(
                CrontabSchedule, minute=entry.minute, hour=entry.hour, day_of_week="*", day_of_month="*",
                month_of_year="*", timezone="UTC",
            )
        PeriodicTask.objects.update_or_create(
            name=entry.name,
            defaults={
                "task": entry.task,
                "description": entry.description,
                "expire_seconds": entry.expire_seconds,
                "enabled": True,
                **schedule,
            },
        )
        names.append(entry.name)
    return names


def _first_or_create(model: Any, **fields: Any) -> Any:
    # Not get_or_create: the admin lets operators create equal schedules, and one match is enough.
    return model.objects.filter(**fields).order_by("pk").first() or model.objects.create(**fields)
