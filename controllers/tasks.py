"""Celery entry points of the controllers app: thin, the work is in services."""

from __future__ import annotations

import time
from collections import Counter

from celery import shared_task

from controllers.services.health import controllers_sweep_stale
from darktower.celery import JobTask
from darktower.metrics import SWEEP_DURATION, SWEEP_MARKED


@shared_task(base=JobTask, name="controllers.tasks.sweep_stale", time_limit=60)
def sweep_stale() -> dict[str, object]:
    started = time.perf_counter()
    result = controllers_sweep_stale()
    # A sweep that found another one holding the lock did no work: its few milliseconds are not a sweep's duration.
    if not result.skipped:
        SWEEP_DURATION.observe(time.perf_counter() - started)
    for target_type, count in Counter(row.target_type for row in result.marked).items():
        SWEEP_MARKED.labels(target_type).inc(count)
    return {
        "marked": [row.id for row in result.marked],
        "disrupted_regions": sorted({row.region for row in result.disrupted}),
        "skipped": result.skipped,
        "cut_off": result.cut_off,
        "sweep_gap_seconds": result.gap.seconds if result.gap else None,
    }
