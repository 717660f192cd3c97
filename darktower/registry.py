"""What the core runs for the apps, registered by the apps.

`darktower/` imports no app. Each app registers the parts the core runs for it from its AppConfig.ready():
retention jobs (the daily task and `manage.py prune`), prune steps that drop whole objects (audit partitions),
the gauges the metrics scrape reads from the database, and what each app holds of a user's personal data (the
sections of a user's export and the steps of a user's erasure, which the accounts app's services run).
Registering twice under one name replaces the first registration, so a second ready() (a test's app reload) adds
nothing.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from prometheus_client.core import Metric


class RetentionJobFn(Protocol):
    def __call__(self, *, dry_run: bool = False) -> int: ...


class PruneStepFn(Protocol):
    def __call__(self, *, dry_run: bool = False) -> list[str]: ...


class PersonalDataRowsFn(Protocol):
    def __call__(self, *, user_id: uuid.UUID) -> Iterable[dict[str, Any]]: ...


class PersonalDataEraseFn(Protocol):
    def __call__(self, *, user_id: uuid.UUID) -> dict[str, int]: ...


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


@dataclass(frozen=True)
class PersonalDataSection:
    """One list of a user's export document: `rows` yields JSON-ready dicts (datetimes, UUIDs and decimals are
    encoded by the caller) and reads through a server-side cursor, so a heavy user's export stays small in
    memory. Never tokens, secrets or hashes of them."""

    name: str  # the document's key
    rows: PersonalDataRowsFn
    order: int  # sections appear in ascending order


@dataclass(frozen=True)
class PersonalDataEraser:
    """One step of a user's erasure, run inside the erasure's transaction before the user row is deleted (so a
    step can still find the user's rows by user id). Returns what it did, by name (counts only: they go into the
    erasure's audit row)."""

    name: str
    run: PersonalDataEraseFn
    order: int  # steps run in ascending order


_retention_jobs: dict[str, RetentionJob] = {}
_prune_steps: dict[str, PruneStep] = {}
_database_gauges: dict[str, DatabaseGauges] = {}
_personal_data_sections: dict[str, PersonalDataSection] = {}
_personal_data_erasers: dict[str, PersonalDataEraser] = {}


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


def personal_data_section_register(*, name: str, rows: PersonalDataRowsFn, order: int) -> None:
    _personal_data_sections[name] = PersonalDataSection(name=name, rows=rows, order=order)


def personal_data_sections() -> list[PersonalDataSection]:
    return sorted(_personal_data_sections.values(), key=lambda section: (section.order, section.name))


def personal_data_eraser_register(*, name: str, run: PersonalDataEraseFn, order: int) -> None:
    _personal_data_erasers[name] = PersonalDataEraser(name=name, run=run, order=order)


def personal_data_erasers() -> list[PersonalDataEraser]:
    return sorted(_personal_data_erasers.values(), key=lambda step: (step.order, step.name))
