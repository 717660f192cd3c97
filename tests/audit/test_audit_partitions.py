"""audit_logs is partitioned by month: no insert fails for lack of a partition, and creating a month's partition
later moves the rows the default partition caught for it."""

from __future__ import annotations

from datetime import UTC, date, datetime
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from audit.partitions import PartitionInfo, audit_partitions_ensure, audit_partitions_list
from darktower.errors import InvalidInput
from tests.fixtures.sql import sql, sql_value, violated_constraint

pytestmark = pytest.mark.django_db


def _month_add(month: date, months: int) -> date:
    index = month.year * 12 + month.month - 1 + months
    return date(index // 12, index % 12 + 1, 1)


def _partition_name(month: date) -> str:
    return f"audit_logs_y{month:%Y}m{month:%m}"


def _insert(created_at: str | datetime) -> int:
    return sql_value(
        "INSERT INTO audit_logs (event_type, actor_type, action, result, created_at) "
        "VALUES ('probe', 'system', 'probe', 'success', %s) RETURNING id",
        [created_at],
    )


def _home(row_id: int) -> str:
    return sql_value("SELECT tableoid::regclass::text FROM audit_logs WHERE id = %s", [row_id])


def _db_month() -> date:
    return sql_value("SELECT date_trunc('month', now() AT TIME ZONE 'UTC')::date")


def test_migrate_created_the_month_it_ran_in_and_the_next_three():
    applied = sql_value("SELECT applied FROM django_migrations WHERE app = 'audit' AND name = '0001_initial'")
    first = applied.astimezone(UTC).date().replace(day=1)
    partitions = {p.name: p for p in audit_partitions_list()}

    for offset in range(4):
        month = _month_add(first, offset)
        info = partitions[_partition_name(month)]
        assert info.lower == datetime(month.year, month.month, 1, tzinfo=UTC)
        next_month = _month_add(month, 1)
        assert info.upper == datetime(next_month.year, next_month.month, 1, tzinfo=UTC)
        assert not info.is_default
    assert partitions["audit_logs_default"] == PartitionInfo("audit_logs_default", None, None, True)
    assert audit_partitions_list()[-1].is_default


def test_a_row_for_a_month_without_partition_lands_in_the_default_partition():
    row = _insert("2035-03-15 12:00:00+00")

    assert _home(row) == "audit_logs_default"


def test_ensuring_the_month_moves_its_rows_into_the_new_attached_partition():
    inside = [_insert("2035-03-01 00:00:00+00"), _insert("2035-03-31 23:59:59.999999+00")]
    # Bounds are UTC: 00:30 on March 1st in UTC+1 is still February in UTC.
    outside = [_insert("2035-03-01 00:30:00+01"), _insert("2035-04-01 00:00:00+00")]

    created = audit_partitions_ensure(months_ahead=0, start_month=date(2035, 3, 1))

    assert created == ["audit_logs_y2035m03"]
    assert [_home(row) for row in inside] == ["audit_logs_y2035m03"] * 2
    assert [_home(row) for row in outside] == ["audit_logs_default"] * 2
    info = {p.name: p for p in audit_partitions_list()}["audit_logs_y2035m03"]
    assert (info.lower, info.upper) == (datetime(2035, 3, 1, tzinfo=UTC), datetime(2035, 4, 1, tzinfo=UTC))
    # Attached, so new rows route there and the parent's rules apply to it.
    assert _home(_insert("2035-03-10 00:00:00+00")) == "audit_logs_y2035m03"
    assert violated_constraint(
        "INSERT INTO audit_logs (event_type, actor_type, action, result, created_at) "
        "VALUES ('e', 'system', 'a', 'maybe', '2035-03-10')"
    ) == "audit_logs_result_valid"
    foreign_keys = sql("SELECT confdeltype FROM pg_constraint WHERE conrelid = 'audit_logs_y2035m03'::regclass "
                       "AND contype = 'f'")
    assert foreign_keys == [("n",)]


def test_ensuring_twice_creates_nothing_the_second_time():
    row = _insert("2035-07-04 00:00:00+00")

    first = audit_partitions_ensure(months_ahead=2, start_month=date(2035, 6, 17))  # any day of the month
    before = audit_partitions_list()
    second = audit_partitions_ensure(months_ahead=2, start_month=date(2035, 6, 1))

    assert first == ["audit_logs_y2035m06", "audit_logs_y2035m07", "audit_logs_y2035m08"]
    assert second == []
    assert audit_partitions_list() == before
    assert _home(row) == "audit_logs_y2035m07"


def test_ensuring_from_the_current_month_skips_the_months_that_exist():
    month = _db_month()
    existing = {p.name for p in audit_partitions_list()}
    expected = [_partition_name(_month_add(month, i)) for i in range(7)]

    created = audit_partitions_ensure(months_ahead=6)

    assert created == [name for name in expected if name not in existing]
    assert set(expected) <= {p.name for p in audit_partitions_list()}


def test_a_negative_horizon_is_refused():
    with pytest.raises(InvalidInput):
        audit_partitions_ensure(months_ahead=-1)


def test_the_command_prints_what_it_created(settings):
    settings.AUDIT_PARTITIONS_AHEAD_MONTHS = 8
    month = _db_month()
    existing = {p.name for p in audit_partitions_list()}
    expected = [n for n in (_partition_name(_month_add(month, i)) for i in range(9)) if n not in existing]
    first, second = StringIO(), StringIO()

    call_command("create_audit_partitions", stdout=first)
    call_command("create_audit_partitions", "--months", "8", stdout=second)

    assert expected  # the migration made four months; eight ahead needs more
    assert first.getvalue().splitlines() == [
        *(f"created {name}" for name in expected),
        f"{len(expected)} created; this month and the next 8 months have partitions",
    ]
    assert second.getvalue().splitlines() == ["0 created; this month and the next 8 months have partitions"]


def test_the_command_refuses_a_negative_horizon():
    with pytest.raises(CommandError, match="months_ahead must be >= 0"):
        call_command("create_audit_partitions", "--months", "-1")
