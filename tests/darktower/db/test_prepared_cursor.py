"""darktower.db.prepared_cursor: a statement prepared on the connection goes on running after a migration changed
the type of a column it returns, which PostgreSQL refuses for the statement prepared before."""

from __future__ import annotations

import psycopg
import pytest
from django.db import NotSupportedError, connection, transaction

from darktower.api.errors import exception_handler
from darktower.db import prepared_cursor

_SELECT = "SELECT label FROM prepared_cursor_probe WHERE id = %(id)s::integer"


def _select() -> str:
    with prepared_cursor() as cursor:
        cursor.execute(_SELECT, {"id": 1})
        return cursor.fetchone()[0]


def _prepared() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM pg_prepared_statements WHERE NOT from_sql AND statement LIKE %s",
                       ["%prepared_cursor_probe%"])
        return cursor.fetchone()[0]


@pytest.fixture
def probe_table(transactional_db):
    with connection.cursor() as cursor:
        cursor.execute("CREATE TABLE prepared_cursor_probe (id integer PRIMARY KEY, label varchar(20))")
        cursor.execute("INSERT INTO prepared_cursor_probe VALUES (1, 'one')")
    yield
    with connection.cursor() as cursor:
        cursor.execute("DROP TABLE IF EXISTS prepared_cursor_probe")


def _from_another_session(sql: str) -> None:
    params = connection.get_connection_params()
    params = {name: value for name, value in params.items()
              if name not in ("cursor_factory", "context", "prepare_threshold")}
    with psycopg.connect(**params, autocommit=True) as other:
        other.execute(sql)


def test_a_statement_is_prepared_once_and_runs_on_after_its_result_type_changed(probe_table):
    assert _select() == "one"
    assert _prepared() == 1
    # What a migration run by another process does.
    _from_another_session("ALTER TABLE prepared_cursor_probe ALTER COLUMN label TYPE text")
    assert _select() == "one"
    assert _select() == "one"
    # The statement prepared before is closed, the one prepared again stays.
    assert _prepared() == 1


def test_in_a_transaction_the_statement_fails_once_and_runs_again_after_the_rollback(probe_table):
    assert _select() == "one"
    _from_another_session("ALTER TABLE prepared_cursor_probe ALTER COLUMN label TYPE text")
    # The transaction is failed by then: it can only give up, and the request that ran it answers an error.
    with pytest.raises(NotSupportedError), transaction.atomic():
        _select()
    assert _select() == "one"
    assert _prepared() == 1


def test_the_api_answers_that_one_failure_a_503_to_retry(probe_table):
    assert _select() == "one"
    _from_another_session("ALTER TABLE prepared_cursor_probe ALTER COLUMN label TYPE text")
    with pytest.raises(NotSupportedError) as failed, transaction.atomic():
        _select()

    response = exception_handler(failed.value, {})

    # Nothing was written (the transaction rolled back) and the same request passes when sent again.
    assert response is not None and response.status_code == 503
    assert response.data["error"]["code"] == "retry"
    assert response["Retry-After"] == "1"
