"""`manage.py check_db`: exit 0 when reachable and migrated, 1 when unreachable, 2 when migrations are pending."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
from io import StringIO

import pytest
from django.conf import settings
from django.core.management import CommandError, call_command
from django.db import connection
from django.db.migrations.loader import MigrationLoader

from tests.fixtures.sql import sql


def _check_db(*args: str) -> str:
    out = StringIO()
    call_command("check_db", *args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_a_reachable_migrated_database_passes_and_is_described():
    lines = _check_db().splitlines()

    assert re.fullmatch(r"server: +PostgreSQL \d+\.\d+.*", lines[0])
    assert lines[1].split() == ["database:", connection.settings_dict["NAME"]]
    assert lines[2:] == ["migrations: all applied"]


@pytest.mark.django_db
def test_pending_migrations_exit_2_unless_allowed():
    # Rolled back with the test: the database forgets one migration, so the plan has it pending again.
    latest = max(name for app, name in MigrationLoader(connection).graph.leaf_nodes() if app == "controllers")
    sql("DELETE FROM django_migrations WHERE app = 'controllers' AND name = %s", [latest])

    with pytest.raises(CommandError, match=r"1 migration\(s\) pending") as failure:
        _check_db()
    allowed = _check_db("--allow-pending")

    assert failure.value.returncode == 2
    assert allowed.splitlines()[2:] == ["migrations: 1 pending", f"  controllers.{latest}"]


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_database_exits_1_with_one_clear_line():
    port = _closed_port()
    env = {**os.environ, "DEBUG": "1", "DATABASE_URL": f"postgresql://dt:secret-pw@127.0.0.1:{port}/darktower"}

    result = subprocess.run(
        [sys.executable, "manage.py", "check_db"],
        cwd=settings.BASE_DIR, env=env, capture_output=True, text=True, timeout=60,
    )

    assert result.returncode == 1
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"CommandError: database 'darktower' on 127.0.0.1:{port} is unreachable: ")
    assert "Connection refused" in lines[0]
    assert "secret-pw" not in result.stderr
