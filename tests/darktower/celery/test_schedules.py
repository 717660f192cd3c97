"""The periodic jobs exist after `migrate`, `setup_schedules` puts them back idempotently, and every schedule
names a task the worker knows."""

from __future__ import annotations

import importlib
from io import StringIO

import pytest
import redis
from django.apps import apps
from django.core.management import call_command
from django.db import OperationalError, connection
from django.db.migrations.executor import MigrationExecutor
from django_celery_beat.models import PeriodicTask

from darktower.celery import MAINTENANCE_QUEUE, JobTask, app
from darktower.schedules import schedules_table

pytestmark = pytest.mark.django_db

frozen = importlib.import_module("audit.migrations.0002_periodic_tasks")
# Jobs added after 0002 come with their own data migration (the drain-deadline job).
later_frozen = [importlib.import_module("audit.migrations.0003_drain_deadline_schedule")]


def _rows() -> dict[str, PeriodicTask]:
    return {task.name: task for task in PeriodicTask.objects.select_related("interval", "crontab")}


def _assert_matches_table(rows: dict[str, PeriodicTask]) -> None:
    for entry in schedules_table():
        task = rows[entry.name]
        assert task.task == entry.task and task.enabled
        assert task.expire_seconds == entry.expire_seconds
        if entry.every_seconds:
            assert (task.interval.every, task.interval.period, task.crontab) == (entry.every_seconds, "seconds", None)
        else:
            assert task.interval is None
            assert (task.crontab.minute, task.crontab.hour, str(task.crontab.timezone)) == (
                entry.minute, entry.hour, "UTC"
            )


def test_migrating_audit_0002_forwards_creates_the_jobs_and_backwards_removes_them():
    executor = MigrationExecutor(connection)
    executor.migrate([("audit", "0001_initial")])
    names = {entry.name for entry in schedules_table()}
    assert not PeriodicTask.objects.filter(name__in=names).exists()

    executor.loader.build_graph()
    executor.migrate([("audit", "0003_drain_deadline_schedule")])

    _assert_matches_table(_rows())


def test_the_frozen_copy_in_the_migration_matches_the_live_table():
    live = {entry.name: entry for entry in schedules_table()}
    copies = frozen.SCHEDULES + [entry for module in later_frozen for entry in module.SCHEDULES]
    assert sorted(entry["name"] for entry in copies) == sorted(live)
    for entry in copies:
        assert entry["task"] == live[entry["name"]].task


def test_setup_schedules_is_idempotent_and_restores_tuned_values(settings):
    settings.STALE_SWEEP_INTERVAL_SECONDS = 3
    PeriodicTask.objects.filter(name="audit.relay_outbox").update(enabled=False, expire_seconds=None)
    out = StringIO()

    call_command("setup_schedules", stdout=out)
    call_command("setup_schedules", stdout=out)

    rows = _rows()
    _assert_matches_table(rows)
    assert rows["controllers.sweep_stale"].interval.every == 3
    assert PeriodicTask.objects.filter(name="audit.relay_outbox").count() == 1
    assert "scheduled controllers.sweep_stale" in out.getvalue()


def test_every_scheduled_task_is_registered_retried_on_transient_errors_and_routed():
    app.loader.import_default_modules()
    for entry in schedules_table():
        task = app.tasks[entry.task]
        assert isinstance(task, JobTask), entry.task
        assert {OperationalError, redis.ConnectionError} <= set(task.autoretry_for)
        assert task.retry_backoff and task.retry_jitter and task.max_retries
    router_queue = {entry.task: app.amqp.router.route({}, entry.task)["queue"].name for entry in schedules_table()}
    assert router_queue["darktower.tasks.run_retention"] == MAINTENANCE_QUEUE
    assert router_queue["audit.tasks.maintain_audit_partitions"] == MAINTENANCE_QUEUE
    assert router_queue["controllers.tasks.sweep_stale"] == "default"


def test_the_migration_creates_the_same_rows_as_setup_schedules():
    PeriodicTask.objects.all().delete()
    for module in [frozen, *later_frozen] * 2:
        module.create_periodic_tasks(apps, None)
    _assert_matches_table(_rows())

    for module in [frozen, *later_frozen]:
        module.delete_periodic_tasks(apps, None)
        assert not PeriodicTask.objects.filter(name__in=[entry["name"] for entry in module.SCHEDULES]).exists()
