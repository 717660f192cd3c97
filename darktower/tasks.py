"""The daily retention run (darktower.retention): every retention job the apps registered, in one task."""

from __future__ import annotations

from celery import shared_task

from darktower.celery import JobTask
from darktower.retention import retention_run


@shared_task(base=JobTask, name="darktower.tasks.run_retention")
def run_retention() -> dict[str, int]:
    return {row.name: row.count for row in retention_run()}
