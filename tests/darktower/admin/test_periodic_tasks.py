"""Celery beat's periodic tasks in the admin: the operator viewer sees them and changes nothing (no form save, no
enable/disable/run action); the operator may change them. Granted by accounts migration 0004, reversibly."""

from __future__ import annotations

from importlib import import_module

import pytest
from django.apps import apps
from django.urls import reverse
from django_celery_beat.models import IntervalSchedule, PeriodicTask

pytestmark = pytest.mark.django_db

_beat_migration = import_module("accounts.migrations.0004_operator_groups_periodic_tasks")
CHANGELIST = "admin:django_celery_beat_periodictask_changelist"


@pytest.fixture
def task():
    every = IntervalSchedule.objects.create(every=10, period=IntervalSchedule.SECONDS)
    return PeriodicTask.objects.create(name="admin test task", task="controllers.sweep_stale", interval=every)


def _may(user, codename: str) -> bool:
    return user.has_perm(f"django_celery_beat.{codename}")


def _form(task, **changes):
    return {
        "name": task.name, "regtask": task.task, "task": task.task, "enabled": "on", "interval": task.interval_id,
        "args": "[]", "kwargs": "{}", "priority": "", "expires_seconds": "", "queue": "", "exchange": "",
        "routing_key": "", "headers": "{}", "description": "", **changes,
    }


def test_viewer_sees_periodic_tasks_and_cannot_change_one(client, viewer_user, task):
    client.force_login(viewer_user)

    listing = client.get(reverse(CHANGELIST))
    change_url = reverse("admin:django_celery_beat_periodictask_change", args=[task.pk])
    detail = client.get(change_url)
    saved = client.post(change_url, _form(task, description="changed by a viewer"))
    toggled = client.post(reverse(CHANGELIST), {"action": "disable_tasks", "_selected_action": [task.pk]})

    assert listing.status_code == 200 and "admin test task" in listing.content.decode()
    assert 'name="action"' not in listing.content.decode()  # enable / disable / toggle / run need change
    assert detail.status_code == 200 and 'name="_save"' not in detail.content.decode()
    assert saved.status_code == 403
    assert toggled.status_code in (200, 302)
    task.refresh_from_db()
    assert task.enabled is True and task.description == ""


def test_operator_may_disable_a_periodic_task(client, operator_user, task):
    client.force_login(operator_user)

    response = client.post(reverse(CHANGELIST), {"action": "disable_tasks", "_selected_action": [task.pk]})

    assert response.status_code == 302
    task.refresh_from_db()
    assert task.enabled is False
    assert not _may(operator_user, "add_periodictask")


def test_migration_reverse_removes_the_grants(operator_groups, viewer_user):
    assert _may(viewer_user, "view_periodictask")

    _beat_migration.periodic_task_permissions_revoke(apps, None)
    revoked = type(viewer_user).objects.get(pk=viewer_user.pk)
    assert not _may(revoked, "view_periodictask")
    assert revoked.has_perm("controllers.view_meetingcontroller")  # 0003's grants stay

    _beat_migration.periodic_task_permissions_grant(apps)
    regranted = type(viewer_user).objects.get(pk=viewer_user.pk)
    assert _may(regranted, "view_periodictask")
    assert not _may(regranted, "change_periodictask")
