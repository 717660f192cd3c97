"""Celery entry points of the controllers app: thin, the work is in services."""

from __future__ import annotations

import time
from collections import Counter

from celery import shared_task

from controllers.services.health import SweepResult, controllers_sweep_stale
from darktower.celery import JobTask
from darktower.metrics import SWEEP_DISRUPTED_REGIONS, SWEEP_DURATION, SWEEP_MARKED, SWEEP_RUNS


@shared_task(base=JobTask, name="controllers.tasks.sweep_stale", time_limit=60)
def sweep_stale() -> dict[str, object]:
    started = time.perf_counter()
    result = controllers_sweep_stale()
    # A sweep that found another one holding the lock did no work: its few milliseconds are not a sweep's duration.
    if not result.skipped:
        SWEEP_DURATION.observe(time.perf_counter() - started)
    for target_type, count in Counter(row.target_type for row in result.marked).items():
        SWEEP_MARKED.labels(target_type).inc(count)
    SWEEP_RUNS.labels(_sweep_result(result)).inc()
    for row in result.disrupted:
        SWEEP_DISRUPTED_REGIONS.labels(row.target_type, row.region).inc()
    return {
        "marked": [row.id for row in result.marked],
        "disrupted_regions": sorted({row.region for row in result.disrupted}),
        "skipped": result.skipped,
        "cut_off": result.cut_off,
        "sweep_gap_seconds": result.gap.seconds if result.gap else None,
    }


def _sweep_result(result: SweepResult) -> str:
    if result.skipped:
        return "skipped"
    if result.gap is not None:
        return "sweep_gap"
    return "cut_off" if result.cut_off else "swept"
