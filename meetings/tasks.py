"""Celery entry points of the meetings app: thin, the work is in meetings.services.

Assignments that ended long ago are deleted by the daily retention run (darktower.tasks.run_retention).
"""

from __future__ import annotations

from celery import shared_task

from darktower.celery import JobTask
from meetings.services.drain_deadlines import drains_enforce
from meetings.services.retention import assignments_end_unhealthy


@shared_task(base=JobTask, name="meetings.tasks.end_unhealthy_assignments", time_limit=60)
def end_unhealthy_assignments() -> int:
    return len(assignments_end_unhealthy())


# The name is the one the beat's schedule rows carry (darktower.schedules and audit migration 0003), kept from
# when the job lived in the controllers app.
@shared_task(base=JobTask, name="controllers.tasks.enforce_drain_deadlines", time_limit=120)
def enforce_drain_deadlines() -> dict[str, object]:
    done = drains_enforce()
    return {
        "controllers": [row.controller_id for row in done],
        "moved": sum(len(row.moved) for row in done),
        "ended": sum(len(row.ended) for row in done),
    }
