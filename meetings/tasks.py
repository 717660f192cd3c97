"""Celery entry points of the meetings app: thin, the work is in meetings.services.retention.

Assignments that ended long ago are deleted by the daily retention run (darktower.tasks.run_retention).
"""

from __future__ import annotations

from celery import shared_task

from darktower.celery import JobTask
from meetings.services.retention import assignments_end_unhealthy


@shared_task(base=JobTask, name="meetings.tasks.end_unhealthy_assignments", time_limit=60)
def end_unhealthy_assignments() -> int:
    return len(assignments_end_unhealthy())
