"""SafeMigration: every statement of a new migration waits at most its lock_timeout for a lock, and an atomic
migration retries, instead of queueing an ACCESS EXCLUSIVE lock (and every query behind it) for as long as another
transaction holds the table.

Another connection holds a lock on a scratch table for real; the tests learn what the migration's connection does
from pg_locks and take over the pause between tries, so that nothing sleeps."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from django.db import connection, migrations
from django.db.migrations.state import ProjectState
from django.db.utils import OperationalError

from darktower import migration as safe
from darktower.migration import SafeMigration
from tests.faults.processes import conninfo_of_test_db

pytestmark = pytest.mark.django_db(transaction=True)

TABLE = "migration_lock_probe"


@pytest.fixture
def scratch() -> Iterator[None]:
    with connection.cursor() as cursor:
        cursor.execute(f"CREATE TABLE {TABLE} (id bigint PRIMARY KEY)")
    yield
    with connection.cursor() as cursor:
        cursor.execute(f"DROP TABLE IF EXISTS {TABLE}")


@pytest.fixture
def holder(scratch: None) -> Iterator[psycopg.Connection[Any]]:
    """Another connection inside an open transaction that has read the table (ACCESS SHARE, as any SELECT)."""
    with psycopg.connect(**{**conninfo_of_test_db(), "autocommit": False}) as conn:
        conn.execute(f"LOCK TABLE {TABLE} IN ACCESS SHARE MODE")
        yield conn
        conn.rollback()


def _waiting_for_probe(conn: psycopg.Connection[Any]) -> int:
    """Lock requests on the scratch table that are queued, not granted (from pg_locks)."""
    return conn.execute(
        "SELECT count(*) FROM pg_locks WHERE relation = %s::regclass AND NOT granted", [TABLE]
    ).fetchone()[0]


def _migration(*, atomic: bool = True, attempts: int = 3, lock_timeout: str = "50ms", seen: list[str]) -> SafeMigration:
    """A migration that records the lock_timeout it runs under, then adds a column to the scratch table."""

    def record(apps: Any, schema_editor: Any) -> None:
        with schema_editor.connection.cursor() as cursor:
            cursor.execute("SHOW lock_timeout")
            seen.append(cursor.fetchone()[0])

    class Migration(SafeMigration):
        operations = [
            migrations.RunPython(record, migrations.RunPython.noop),
            migrations.RunSQL(f"ALTER TABLE {TABLE} ADD COLUMN note text",
                              f"ALTER TABLE {TABLE} DROP COLUMN note"),
        ]

    Migration.atomic = atomic
    Migration.attempts = attempts
    Migration.lock_timeout = lock_timeout
    return Migration("0999_probe", "controllers")


def _apply(migration: SafeMigration) -> None:
    with connection.schema_editor(atomic=migration.atomic) as schema_editor:
        migration.apply(ProjectState(), schema_editor)


def _has_note_column() -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM information_schema.columns WHERE table_name = %s AND column_name = 'note'",
                       [TABLE])
        return cursor.fetchone() is not None


def test_a_lock_held_elsewhere_makes_each_try_give_up_and_the_last_one_fail(holder, monkeypatch):
    """The ALTER queues behind the holder (pg_locks shows it waiting), gives up at the lock timeout, and after
    the last try the migration fails with the lock error instead of waiting for the holder to finish."""
    pauses: list[float] = []
    monkeypatch.setattr(safe, "pause", pauses.append)
    seen: list[str] = []
    migration = _migration(attempts=2, lock_timeout="1s", seen=seen)
    failure: list[BaseException] = []

    def run() -> None:
        try:
            _apply(migration)
        except BaseException as error:  # handed to the test's thread to assert on
            failure.append(error)
        finally:
            connection.close()

    worker = threading.Thread(target=run)
    worker.start()
    try:
        with psycopg.connect(**conninfo_of_test_db()) as observer:
            while worker.is_alive() and not _waiting_for_probe(observer):
                pass  # polls pg_locks until the ALTER is queued behind the holder
            assert worker.is_alive(), "the migration ended before it ever waited for the lock"
        worker.join(timeout=60)
        assert not worker.is_alive(), "the migration kept waiting for the lock"
    finally:
        holder.rollback()
        worker.join()

    assert len(failure) == 1 and isinstance(failure[0], OperationalError)
    assert safe.lock_not_available(failure[0])
    assert seen == ["1s", "1s"]  # each try ran under the timeout
    assert pauses == [1.0]  # one pause between the two tries
    assert not _has_note_column()


def test_a_try_that_timed_out_is_retried_once_the_lock_is_free(holder, monkeypatch, caplog):
    observed: list[int] = []

    def release(seconds: float) -> None:
        # Between tries: the failed try left no request queued, then the holder's transaction ends.
        observed.append(_waiting_for_probe(holder))
        holder.rollback()

    monkeypatch.setattr(safe, "pause", release)
    seen: list[str] = []

    with caplog.at_level(logging.WARNING, logger="darktower.migration"):
        _apply(_migration(seen=seen))

    assert observed == [0]
    assert seen == ["50ms", "50ms"]
    assert _has_note_column()
    assert "a lock was not granted within 50ms (try 1 of 3)" in caplog.text
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "0"  # SET LOCAL: gone with the migration's transaction


def test_an_error_other_than_the_lock_timeout_is_not_retried(scratch, monkeypatch):
    monkeypatch.setattr(safe, "pause", lambda seconds: pytest.fail("retried an error that is not a lock timeout"))

    class Migration(SafeMigration):
        operations = [migrations.RunSQL(f"ALTER TABLE {TABLE} ADD COLUMN id bigint", migrations.RunSQL.noop)]

    with pytest.raises(Exception, match="already exists"):
        _apply(Migration("0999_probe", "controllers"))


def test_a_non_atomic_migration_gets_the_timeout_for_its_session_and_is_not_retried(holder, monkeypatch):
    monkeypatch.setattr(safe, "pause", lambda seconds: pytest.fail("a non-atomic migration was retried"))
    seen: list[str] = []

    with pytest.raises(OperationalError) as failure:
        _apply(_migration(atomic=False, seen=seen))

    assert safe.lock_not_available(failure.value) and seen == ["50ms"]
    with connection.cursor() as cursor:
        cursor.execute("SHOW lock_timeout")
        assert cursor.fetchone()[0] == "0"  # reset once the migration is over


def test_sqlmigrate_prints_the_lock_timeout_first():
    class Migration(SafeMigration):
        operations = [migrations.RunSQL("SELECT 1", migrations.RunSQL.noop)]

    migration = Migration("0999_probe", "controllers")
    with connection.schema_editor(collect_sql=True, atomic=True) as schema_editor:
        migration.apply(ProjectState(), schema_editor, collect_sql=True)
    assert schema_editor.collected_sql[0] == "SET LOCAL lock_timeout = '2s';"
