"""Small PostgreSQL helpers for models, migrations, hot statements and batched deletes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
from django.db import connection, models, transaction
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.backends.ddl_references import Statement
from django.db.backends.postgresql.psycopg_any import register_tzloader  # type: ignore[import-untyped]
from django.db.backends.utils import CursorWrapper
from django.db.migrations.operations.base import Operation
from django.db.migrations.state import ProjectState
from psycopg import adapters, pq

_TIMESTAMPTZ_OID = adapters.types["timestamptz"].oid


class PgIndex(models.Index):
    """An index whose name may use PostgreSQL's 63 characters (Django caps names at 30 for Oracle).

    Needed to keep the seeds' index names, such as idx_meeting_controllers_available.
    """

    max_name_length = 63


_ON_DELETE_SQL = {"CASCADE": "CASCADE", "SET NULL": "SET NULL", "RESTRICT": "RESTRICT"}


class SetForeignKeyOnDelete(Operation):
    """Give an existing foreign key a database-level ON DELETE action.

    Django 5.2 emulates on_delete in Python and creates foreign keys without ON DELETE; the seeds ask
    the database to enforce CASCADE / SET NULL, so raw SQL deletes behave like ORM deletes. The
    constraint keeps Django's deterministic name and its DEFERRABLE INITIALLY DEFERRED; reversing
    restores the plain (NO ACTION) key. No introspection, so `sqlmigrate` shows the exact SQL.
    """

    reduces_to_sql = True
    reversible = True

    def __init__(self, model_name: str, field_name: str, on_delete: str) -> None:
        if on_delete not in _ON_DELETE_SQL:
            raise ValueError(f"unsupported ON DELETE action {on_delete!r}")
        self.model_name = model_name
        self.field_name = field_name
        self.on_delete = on_delete

    def deconstruct(self) -> tuple[str, list[Any], dict[str, Any]]:
        kwargs = {"model_name": self.model_name, "field_name": self.field_name, "on_delete": self.on_delete}
        return (self.__class__.__qualname__, [], kwargs)

    def state_forwards(self, app_label: str, state: ProjectState) -> None:
        pass

    def _recreate(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, state: ProjectState, action: str | None
    ) -> None:
        model = state.apps.get_model(app_label, self.model_name)
        field = model._meta.get_field(self.field_name)
        table = model._meta.db_table
        # Django's own naming of the key (a private method, so absent from its stubs).
        name = str(schema_editor._fk_constraint_name(model, field, "_fk_%(to_table)s_%(to_column)s"))  # type: ignore[attr-defined]
        # Inside the migration that creates the table, Django has only queued the CREATE of the key
        # (it runs deferred SQL at the end); take it out of the queue instead of dropping it.
        pending = [
            statement
            for statement in schema_editor.deferred_sql
            if isinstance(statement, Statement)
            and statement.template == schema_editor.sql_create_fk
            and statement.references_column(table, field.column)
        ]
        quote = schema_editor.quote_name
        if pending:
            for statement in pending:
                schema_editor.deferred_sql.remove(statement)
        else:
            schema_editor.execute(f"ALTER TABLE {quote(table)} DROP CONSTRAINT {quote(name)}")
        target = field.target_field
        on_delete = f" ON DELETE {_ON_DELETE_SQL[action]}" if action else ""
        schema_editor.execute(
            f"ALTER TABLE {quote(table)} ADD CONSTRAINT {quote(name)} FOREIGN KEY ({quote(field.column)}) "
            f"REFERENCES {quote(target.model._meta.db_table)} ({quote(target.column)}){on_delete} "
            "DEFERRABLE INITIALLY DEFERRED"
        )

    def database_forwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        self._recreate(app_label, schema_editor, to_state, self.on_delete)

    def database_backwards(
        self, app_label: str, schema_editor: BaseDatabaseSchemaEditor, from_state: ProjectState, to_state: ProjectState
    ) -> None:
        self._recreate(app_label, schema_editor, to_state, None)

    def describe(self) -> str:
        return f"Set ON DELETE {self.on_delete} on {self.model_name}.{self.field_name}"

    @property
    def migration_name_fragment(self) -> str:
        return f"{self.model_name}_{self.field_name}_on_delete"


@contextmanager
def server_bound_cursor() -> Iterator[psycopg.Cursor]:
    """A cursor of Django's connection (its transaction too) that sends parameters apart from the SQL and lets
    psycopg prepare a statement once it runs often. Django's cursors bind on the client: they quote every value
    into the SQL text in Python, and PostgreSQL plans each text anew. For the heartbeat flush (arrays of
    hundreds of values, five times a second) both showed in profiles. Database errors are Django's, as from
    any cursor."""
    connection.ensure_connection()
    with connection.wrap_database_errors, _ServerBindingCursor(connection.connection) as cursor:
        yield cursor



# PostgreSQL's refusal to run a statement prepared before the type of a column it returns changed (a migration).
_RESULT_TYPE_CHANGED = "cached plan must not change result type"


def result_type_changed(error: BaseException) -> bool:
    """Whether `error` (Django's, or psycopg's under it) is PostgreSQL refusing a statement prepared before the
    type of a column it returns changed."""
    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    diag = getattr(cause, "diag", None)
    return isinstance(cause, psycopg.errors.FeatureNotSupported) and diag is not None and (
        diag.message_primary == _RESULT_TYPE_CHANGED
    )


class _ServerBindingCursor(psycopg.Cursor[Any]):
    """A psycopg cursor that binds on the server (psycopg prepares a statement once it has run `prepare_threshold`
    times on the connection), and prepares again a statement whose result type has changed since."""

    def execute(self, query: Any, params: Any = None, *, prepare: bool | None = None,
                binary: bool | None = None) -> Any:
        try:
            return super().execute(query, params, prepare=prepare, binary=binary)
        except psycopg.errors.FeatureNotSupported as error:
            # The statement, forgotten below, is prepared again by running it again: at once outside a transaction;
            # in one, which the error has failed, by the next run after the rollback.
            if error.diag.message_primary != _RESULT_TYPE_CHANGED or (
                self.connection.info.transaction_status != pq.TransactionStatus.IDLE
            ):
                raise
            return super().execute(query, params, prepare=prepare, binary=binary)

    def _maybe_prepare_gen(self, pgq: Any, *, prepare: bool | None = None, binary: bool | None = None) -> Any:
        # Django's query log (CaptureQueriesContext, DEBUG) reads the statement sent from `_query`, which psycopg
        # sets only for a statement it does not run prepared.
        self._query = pgq
        try:
            yield from super()._maybe_prepare_gen(pgq, prepare=prepare, binary=binary)
        except psycopg.errors.FeatureNotSupported as error:
            if error.diag.message_primary == _RESULT_TYPE_CHANGED:
                # psycopg would send the statement's name again and again: forget it (psycopg closes it on the
                # server after its next statement), so that the next run prepares it anew, under another name.
                manager = self._conn._prepared
                name = manager._names.pop(manager.key(pgq), None)
                if name:
                    manager._to_flush.append(name)
            raise


class _PreparingCursor(_ServerBindingCursor):
    """A server-binding cursor that prepares each statement the first time it runs on the connection, whatever else
    the connection ran meanwhile: psycopg's own count towards `prepare_threshold` also counts every statement
    Django's cursors send, each text with its values apart, and evicts old counts."""

    def _maybe_prepare_gen(self, pgq: Any, *, prepare: bool | None = None, binary: bool | None = None) -> Any:
        return super()._maybe_prepare_gen(pgq, prepare=True if prepare is None else prepare, binary=binary)


@contextmanager
def prepared_cursor() -> Iterator[CursorWrapper]:
    """Django's cursor of the connection (its transaction, execute wrappers, query log and database errors) over a
    psycopg cursor that binds parameters on the server and prepares its statement: a named statement of the
    protocol, parsed and planned once per connection instead of on every run, for a hot statement whose parse and
    plan are a share of what it costs PostgreSQL. DB_PREPARED_STATEMENTS off, the statement is bound on the server
    and not prepared. The statement must cast every parameter (`%(name)s::uuid`): psycopg sends text and NULL
    untyped, and types a uuid or an int (by its size) apart, each combination of types a statement of its own to
    prepare: pass values whose type varies (a uuid or NULL) as text."""
    connection.close_if_health_check_failed()
    connection.ensure_connection()
    with connection.wrap_database_errors:
        cursor = _PreparingCursor(connection.connection)
        # As Django's own cursors: timestamps read in the connection's time zone.
        loader = connection.connection.adapters.get_loader(_TIMESTAMPTZ_OID, pq.Format.TEXT)
        if connection.timezone != loader.timezone:
            register_tzloader(connection.timezone, cursor)
    # Django's own wrapping of a new cursor (a private method, so absent from its stubs).
    with connection._prepare_cursor(cursor) as wrapped:  # type: ignore[attr-defined]
        yield wrapped

# Rows per DELETE: each batch is its own short transaction, so a year of backlog never holds locks for
# long, and a crash loses at most one batch of progress.
RETENTION_BATCH_SIZE = 1000


def delete_in_batches(
    *, table: str, pk: str, where: str, params: dict[str, Any], batch_size: int = RETENTION_BATCH_SIZE,
    dry_run: bool = False,
) -> int:
    """Delete the rows of `table` matching `where`, batch by batch; return how many (or would be, dry run).

    `table`, `pk` and `where` are constants of the calling module, never input. Rows another transaction
    holds are skipped (FOR UPDATE SKIP LOCKED) and left for the next run instead of waited for.
    """
    with connection.cursor() as cursor:
        if dry_run:
            cursor.execute(f"SELECT count(*) FROM {table} WHERE {where}", params)  # noqa: S608
            return cursor.fetchone()[0]
        sql = (
            f"DELETE FROM {table} WHERE {pk} IN "  # noqa: S608
            f"(SELECT {pk} FROM {table} WHERE {where} LIMIT %(batch_size)s FOR UPDATE SKIP LOCKED)"
        )
        total = 0
        while True:
            with transaction.atomic():
                cursor.execute(sql, {**params, "batch_size": batch_size})
                deleted = cursor.rowcount
            total += deleted
            if deleted < batch_size:
                return total
