"""Celery entry points of the controllers app: thin, the work is in services."""

from __future__ import annotations

from celery import shared_task

from controllers.services.health import controllers_sweep_stale
from darktower.celery import JobTask


@shared_task(base=JobTask, name="controllers.tasks.sweep_stale", time_limit=60)
def sweep_stale() -> dict[str, object]:
    result = controllers_sweep_stale()
    return {
        "marked": [row.id for row in result.marked],
        "disrupted_regions": sorted({row.region for row in result.disrupted}),
        "skipped": result.skipped,
    }
