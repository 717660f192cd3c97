"""Admin fixtures: the operator groups (as migrations 0003 and 0004 create them) and staff users in them."""

from __future__ import annotations

from importlib import import_module

import pytest
from django.apps import apps
from django.contrib.auth.models import Group

from tests.factories import make_user

_groups_migration = import_module("accounts.migrations.0003_operator_groups")
_beat_migration = import_module("accounts.migrations.0004_operator_groups_periodic_tasks")
PASSWORD = "correct-horse-battery"


@pytest.fixture
def operator_groups(db):
    # Idempotent: a transactional test elsewhere may have flushed the rows the migration created.
    _groups_migration.operator_groups_sync(apps)
    _beat_migration.periodic_task_permissions_grant(apps)
    return {name: Group.objects.get(name=name) for name in (_groups_migration.VIEWER, _groups_migration.OPERATOR)}


@pytest.fixture
def viewer_user(operator_groups):
    user = make_user(display_name="Viewer", is_staff=True, password=PASSWORD)
    user.groups.add(operator_groups[_groups_migration.VIEWER])
    return user


@pytest.fixture
def operator_user(operator_groups):
    user = make_user(display_name="Op", is_staff=True, password=PASSWORD)
    user.groups.add(operator_groups[_groups_migration.OPERATOR])
    return user


@pytest.fixture
def superuser(db):
    return make_user(display_name="Root", is_staff=True, is_superuser=True, password=PASSWORD)
