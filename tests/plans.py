"""Helpers for tests of a statement's plan over a fleet-sized table."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import ModuleType
from typing import Any

import pytest
from django.db import connection


def copy_members(table: str, pk: str, template_id: str, *, prefix: str, count: int) -> None:
    """`count` copies of the row `template_id` with ids prefix + 00001.., then ANALYZE: a fleet for the planner.
    `table` and `pk` are constants of the tests, never input."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} SELECT copy.* FROM {table} m, generate_series(1, %s) i, "
            f"jsonb_populate_record(NULL::{table}, "
            f"to_jsonb(m) || jsonb_build_object('{pk}', %s || lpad(i::text, 5, '0'))) copy WHERE m.{pk} = %s",
            [count, prefix, template_id],
        )
        cursor.execute(f"ANALYZE {table}")


class _Explaining:
    """A cursor that records the plan of each statement before running it."""

    def __init__(self, cursor: Any, plans: list[str]) -> None:
        self._cursor, self._plans = cursor, plans

    def execute(self, query: str, params: Any = None) -> Any:
        self._plans.append("\n".join(row[0] for row in self._cursor.execute("EXPLAIN " + query, params).fetchall()))
        return self._cursor.execute(query, params)

    def fetchall(self) -> list[Any]:
        return self._cursor.fetchall()

    def fetchone(self) -> Any:
        return self._cursor.fetchone()


def record_plans(monkeypatch: pytest.MonkeyPatch, module: ModuleType) -> list[str]:
    """From now on, `module.server_bound_cursor` EXPLAINs each statement before running it; the plans go to the
    list returned."""
    plans: list[str] = []
    real = module.server_bound_cursor

    @contextlib.contextmanager
    def explaining() -> Iterator[_Explaining]:
        with real() as cursor:
            yield _Explaining(cursor, plans)

    monkeypatch.setattr(module, "server_bound_cursor", explaining)
    return plans
