"""The Celery application: broker and result backend from REDIS_URL (settings), tasks from each app's tasks.py.

Production runs the worker and the beat as two processes (`celery -A darktower worker`, `celery -A darktower
beat`); in development the beat may be embedded (`celery -A darktower worker -B`). The beat reads its schedule
from the database (django-celery-beat's DatabaseScheduler); darktower/schedules.py defines it.
"""

from __future__ import annotations

import logging
import os
from typing import Any

import redis
from celery import Celery, Task
from celery.signals import task_failure, task_retry
from django.db import InterfaceError, OperationalError
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "darktower.settings")

logger = logging.getLogger("darktower.tasks")

# Two queues so that an hour-long retention run never delays the 5-second stale sweep: one worker consumes
# both by default; a larger deployment gives `maintenance` its own worker (`-Q maintenance`).
DEFAULT_QUEUE = "default"
MAINTENANCE_QUEUE = "maintenance"

# Errors that say "the database or Redis is briefly unreachable", not "this job is wrong". Every job is a
# set of conditional statements in transactions, so running it again after one of these is safe.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    OperationalError,
    InterfaceError,
    redis.ConnectionError,
    redis.TimeoutError,
)

app = Celery("darktower")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.conf.update(
    task_queues=(Queue(DEFAULT_QUEUE), Queue(MAINTENANCE_QUEUE)),
    task_default_queue=DEFAULT_QUEUE,
    task_routes={
        "darktower.tasks.*": {"queue": MAINTENANCE_QUEUE},
        "audit.tasks.maintain_audit_partitions": {"queue": MAINTENANCE_QUEUE},
    },
    # Nobody reads the return values of periodic jobs: they log their counts instead.
    task_ignore_result=True,
    # Django's LOGGING config (JSON in production) stays in charge of the worker's log output.
    worker_hijack_root_logger=False,
)
app.autodiscover_tasks()


class JobTask(Task):
    """Base of every periodic job: retried with exponential backoff and jitter on transient DB/Redis errors.

    A job runs in its own transactions, so a retry never finds half-done work. Periodic jobs keep
    max_retries low: the next beat tick runs them again anyway.
    """

    autoretry_for = TRANSIENT_ERRORS
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True
    max_retries = 3


# Task arguments stay out of these logs on purpose: they may one day carry identifiers that must not be logged.
@task_retry.connect
def log_task_retry(sender: Task | None = None, reason: object = None, **_: Any) -> None:
    logger.warning("task %s will retry: %s", getattr(sender, "name", "?"), reason)


@task_failure.connect
def log_task_failure(
    sender: Task | None = None, task_id: str | None = None, exception: BaseException | None = None, **_: Any
) -> None:
    logger.error(
        "task %s failed: %s", getattr(sender, "name", "?"), type(exception).__name__ if exception else "?",
        extra={"task_id": task_id},
        exc_info=exception,
    )
