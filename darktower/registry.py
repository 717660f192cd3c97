"""What the core runs for the apps, registered by the apps.

`darktower/` imports no app. Each app registers the parts the core runs for it from its AppConfig.ready():
retention jobs (the daily task and `manage.py prune`), prune steps that drop whole objects (audit partitions),
and the gauges the metrics scrape reads from the database. Registering twice under one name replaces the first
registration, so a second ready() (a test's app reload) adds nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import Metric


class RetentionJobFn(Protocol):
    def __call__(self, *, dry_run: bool = False) -> int: ...


class PruneStepFn(Protocol):
    def __call__(self, *, dry_run: bool = False) -> list[str]: ...


# A scrape-time part: given an open cursor, the metrics it reads (a DatabaseError fails the whole scrape's
# database part, which then reports darktower_metrics_database_up 0).
DatabaseGauges = Callable[[Any], Iterable[Metric]]


@dataclass(frozen=True)
class RetentionJob:
    name: str
    run: RetentionJobFn
    order: int  # jobs run in ascending order (one app's rows may wait for another's: recordings before meetings)


@dataclass(frozen=True)
class PruneStep:
    name: str
    run: PruneStepFn  # returns the names of what it dropped (or would drop, dry run)


_retention_jobs: dict[str, RetentionJob] = {}
_prune_steps: dict[str, PruneStep] = {}
_database_gauges: dict[str, DatabaseGauges] = {}


def retention_job_register(*, name: str, run: RetentionJobFn, order: int) -> None:
    _retention_jobs[name] = RetentionJob(name=name, run=run, order=order)


def retention_jobs() -> list[RetentionJob]:
    return sorted(_retention_jobs.values(), key=lambda job: (job.order, job.name))


def prune_step_register(*, name: str, run: PruneStepFn) -> None:
    _prune_steps[name] = PruneStep(name=name, run=run)


def prune_steps() -> list[PruneStep]:
    return list(_prune_steps.values())


def database_gauges_register(*, name: str, gauges: DatabaseGauges) -> None:
    _database_gauges[name] = gauges


def database_gauges() -> list[DatabaseGauges]:
    return list(_database_gauges.values())
