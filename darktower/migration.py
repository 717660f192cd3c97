"""Migrations that cannot stall the fleet: every statement under a lock timeout, and retries.

An ALTER TABLE needs ACCESS EXCLUSIVE. Queued behind any open transaction on the table, it makes every later
query on that table queue behind it in turn: on meeting_controllers, media_handlers or meeting_assignments that
stops heartbeat flushes, placements and joins until the ALTER gets its lock. Under a lock timeout the statement
gives up instead, the queue drains at once, and the migration tries again after a pause; after `attempts` tries
the migration fails, and the deploy says so, rather than the fleet stalling.

Every migration newer than the squawk baseline (tools/squawk_migrations.py) is a SafeMigration:

    from darktower.migration import SafeMigration

    class Migration(SafeMigration):
        dependencies = [...]
        operations = [...]

An atomic migration runs whole in one transaction: `SET LOCAL lock_timeout` first, then each try inside a
savepoint, so a try that timed out leaves nothing behind and holds no lock while it waits for the next. A
non-atomic migration (CREATE INDEX CONCURRENTLY) commits statement by statement, so it cannot be retried whole: it
gets the same lock_timeout for its session and fails at the first timeout; its statements take locks that do
not block reads or writes, and a failed CONCURRENTLY build leaves an INVALID index to drop before running it
again. `sqlmigrate` prints the SET too, so squawk (require-lock-timeout) sees that every statement is covered.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from django.db import migrations, transaction
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import ProjectState
from django.db.utils import OperationalError
from psycopg import errors

logger = logging.getLogger(__name__)

Step = Callable[..., ProjectState]


def pause(seconds: float) -> None:
    """The wait between two tries (module level so that a test can take over the moment without sleeping)."""
    time.sleep(seconds)


def lock_not_available(error: BaseException) -> bool:
    """Whether `error` is PostgreSQL's lock_timeout (SQLSTATE 55P03), not any other failure."""
    return isinstance(error, OperationalError) and isinstance(error.__cause__, errors.LockNotAvailable)


class SafeMigration(migrations.Migration):
    """A migration whose statements wait at most `lock_timeout` for a lock; atomic ones retry `attempts` times.

    A migration may change the three class attributes when it has a reason (say it in a comment).
    """

    lock_timeout = "2s"
    attempts = 5
    # The n-th retry waits n times this long: long enough for the transactions that held the lock to end.
    retry_pause_seconds = 1.0

    def apply(
        self, project_state: ProjectState, schema_editor: BaseDatabaseSchemaEditor, collect_sql: bool = False
    ) -> ProjectState:
        return self._under_lock_timeout(super().apply, project_state, schema_editor, collect_sql)

    def unapply(
        self, project_state: ProjectState, schema_editor: BaseDatabaseSchemaEditor, collect_sql: bool = False
    ) -> ProjectState:
        return self._under_lock_timeout(super().unapply, project_state, schema_editor, collect_sql)

    def _set_lock_timeout_sql(self, schema_editor: BaseDatabaseSchemaEditor) -> str:
        scope = "LOCAL " if schema_editor.atomic_migration else ""
        # The value is a class attribute of the migration, never input; quote_value guards it anyway.
        return f"SET {scope}lock_timeout = {schema_editor.quote_value(self.lock_timeout)}"

    def _under_lock_timeout(
        self, step: Step, project_state: ProjectState, schema_editor: BaseDatabaseSchemaEditor, collect_sql: bool
    ) -> ProjectState:
        setting = self._set_lock_timeout_sql(schema_editor)
        if collect_sql:
            schema_editor.collected_sql.append(f"{setting};")
            return step(project_state, schema_editor, collect_sql=True)
        connection = schema_editor.connection
        with connection.cursor() as cursor:
            cursor.execute(setting)
        if not schema_editor.atomic_migration:
            try:
                return step(project_state, schema_editor)
            finally:
                with connection.cursor() as cursor:
                    cursor.execute("RESET lock_timeout")
        # Each try starts from the state before the migration: a failed try may have moved its copy halfway.
        before = project_state.clone()
        state = project_state
        attempt = 1
        while True:
            deferred = list(schema_editor.deferred_sql)
            try:
                with transaction.atomic(using=connection.alias):
                    state = step(state, schema_editor)
                    # The statements Django defers to the end of the migration (indexes, foreign keys) need
                    # locks too: run them inside the try, under the savepoint, rather than after it.
                    for sql in schema_editor.deferred_sql:
                        schema_editor.execute(sql)
                    schema_editor.deferred_sql.clear()
                return state
            except OperationalError as error:
                if not lock_not_available(error) or attempt >= self.attempts:
                    raise
                schema_editor.deferred_sql[:] = deferred
                state = before.clone()
                wait = attempt * self.retry_pause_seconds
                logger.warning(
                    "migration %s.%s: a lock was not granted within %s (try %d of %d); retrying in %.1f s",
                    self.app_label, self.name, self.lock_timeout, attempt, self.attempts, wait,
                )
                pause(wait)
                attempt += 1
