"""Raw SQL helpers: these tests talk to PostgreSQL directly, so that they check the database, not the ORM."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import IntegrityError, connection, transaction


def sql(query: str, params: Any = None) -> list[tuple[Any, ...]]:
    with connection.cursor() as cursor:
        cursor.execute(query, params)
        return cursor.fetchall() if cursor.description else []


def sql_value(query: str, params: Any = None) -> Any:
    rows = sql(query, params)
    assert len(rows) == 1, rows
    return rows[0][0]


def violated_constraint(query: str, params: Any = None) -> str:
    """Run a statement that must fail on an integrity rule; return the name of the rule it broke."""
    with pytest.raises(IntegrityError) as failure, transaction.atomic():
        sql(query, params)
    return failure.value.__cause__.diag.constraint_name
