"""Audit partitions: the daily job creates the months ahead and drops whole months past retention, never the
default partition."""

from __future__ import annotations

from datetime import UTC, date, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection

from audit.partitions import audit_partitions_drop_older_than, audit_partitions_ensure, audit_partitions_list
from audit.tasks import maintain_audit_partitions
from darktower.errors import InvalidInput

pytestmark = pytest.mark.django_db


def _value(sql: str, params: list | None = None):
    with connection.cursor() as cursor:
        cursor.execute(sql, params or [])
        return cursor.fetchone()[0]


def _months_ago(months: int) -> date:
    return _value(
        "SELECT (date_trunc('month', now() AT TIME ZONE 'UTC') - make_interval(months => %s))::date", [months]
    )


def _name(month: date) -> str:
    return f"audit_logs_y{month:%Y}m{month:%m}"


def _insert(created_at: datetime) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO audit_logs (event_type, actor_type, action, result, created_at) "
            "VALUES ('probe', 'system', 'probe', 'success', %s)",
            [created_at],
        )


def _exists(table: str) -> bool:
    return _value("SELECT to_regclass(%s) IS NOT NULL", [table])


def _count(table: str) -> int:
    return _value(f"SELECT count(*) FROM {table}")


def test_drops_whole_months_past_retention_and_keeps_the_rest():
    fourteen, thirteen, twelve = _months_ago(14), _months_ago(13), _months_ago(12)
    for month in (fourteen, thirteen, twelve):
        audit_partitions_ensure(months_ahead=0, start_month=month)
    for day in (1, 15, 28):
        _insert(datetime(fourteen.year, fourteen.month, day, 12, tzinfo=UTC))
    _insert(datetime(twelve.year, twelve.month, 1, tzinfo=UTC))
    default_rows = _count("audit_logs_default")
    _insert(datetime(2001, 1, 1, tzinfo=UTC))  # no partition for it: the default partition catches it
    assert _count(_name(fourteen)) == 3

    dropped = audit_partitions_drop_older_than(months=12)

    # 13 months back ends before now() - 12 months; the month 12 back still holds rows younger than that.
    assert dropped == [_name(fourteen), _name(thirteen)]
    assert not _exists(_name(fourteen)) and not _exists(_name(thirteen))
    assert _exists(_name(twelve)) and _count(_name(twelve)) == 1
    assert _exists("audit_logs_default") and _count("audit_logs_default") == default_rows + 1
    bounds = [datetime(month.year, month.month, 1, tzinfo=UTC) for month in (fourteen, thirteen)]
    assert _value("SELECT count(*) FROM audit_logs WHERE created_at >= %s AND created_at < %s", bounds) == 0
    assert audit_partitions_list()[-1].is_default
    # A second run has nothing left to drop.
    assert audit_partitions_drop_older_than(months=12) == []


def test_dry_run_names_the_partitions_and_drops_none():
    old = _months_ago(20)
    audit_partitions_ensure(months_ahead=0, start_month=old)

    assert audit_partitions_drop_older_than(months=12, dry_run=True) == [_name(old)]
    assert _exists(_name(old))


def test_months_must_be_positive():
    with pytest.raises(InvalidInput):
        audit_partitions_drop_older_than(months=0)


def test_the_daily_task_creates_the_months_ahead_and_drops_the_expired(settings):
    settings.AUDIT_PARTITIONS_AHEAD_MONTHS = 5
    settings.RETENTION_AUDIT_MONTHS = 12
    old = _months_ago(15)
    audit_partitions_ensure(months_ahead=0, start_month=old)

    result = maintain_audit_partitions.apply().get()

    assert result["dropped"] == [_name(old)]
    ahead = [_name(_months_ago(-offset)) for offset in range(6)]
    assert all(_exists(name) for name in ahead)
    assert set(result["created"]) <= set(ahead)


def test_prune_drops_expired_partitions_too(settings):
    settings.RETENTION_AUDIT_MONTHS = 12
    old = _months_ago(24)
    audit_partitions_ensure(months_ahead=0, start_month=old)
    out = StringIO()

    call_command("prune", stdout=out)

    assert f"audit_partitions: deleted 1 ({_name(old)})" in out.getvalue()
    assert not _exists(_name(old))
