"""Bench 5: removing a month of 1,000,000 audit rows: DELETE of the rows vs dropping their monthly partition.

audit_logs is partitioned by month on created_at (audit migration 0001). Retention drops whole partitions
(audit.partitions.audit_partitions_drop_older_than: DETACH PARTITION + DROP TABLE under the partition
creator's advisory lock); the alternative is a DELETE of the same rows, which also leaves dead tuples behind until
a VACUUM, and writes WAL for every row.

Set-up in a scratch database: the partition of a month two years back, filled with --rows rows spread over the
month (four indexes plus the primary key, as in production), VACUUM ANALYZE. Then, timed: DELETE of the month's
rows through the parent table (one transaction), the VACUUM that gives the space back; the rows are loaded again,
and the retention function drops the partition. WAL written is the difference of pg_current_wal_lsn() around each.
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime

from bench.common import Result, Timer, argument_parser, finish, scratch_database, server_version, use_django

NAME = "audit_retention"

_LOAD = """
INSERT INTO audit_logs (event_type, actor_type, target_type, target_id, action, result, metadata, created_at)
SELECT (ARRAY['controller_registered', 'meeting_created', 'user_login', 'controller_unhealthy'])[1 + i %% 4],
       'system', 'meeting_controller', 'mc-' || (i %% 20000), 'heartbeat_state_change', 'success',
       jsonb_build_object('region', 'us-east-1', 'from_status', 'healthy', 'to_status', 'degraded', 'n', i),
       %(lower)s::timestamptz + (%(upper)s::timestamptz - %(lower)s::timestamptz) * (i::float8 / (%(n)s + 1))
FROM generate_series(1, %(n)s) i
"""


def _month_back(today: date, months: int) -> date:
    index = today.year * 12 + today.month - 1 - months
    return date(index // 12, index % 12 + 1, 1)


def _wal_lsn(cursor) -> str:  # type: ignore[no-untyped-def]
    cursor.execute("SELECT pg_current_wal_lsn()")
    return str(cursor.fetchone()[0])


def _wal_since(cursor, start: str) -> int:  # type: ignore[no-untyped-def]
    cursor.execute("SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), %s::pg_lsn)", [start])
    return int(cursor.fetchone()[0])


def _size(cursor, relation: str) -> int:  # type: ignore[no-untyped-def]
    cursor.execute("SELECT coalesce(pg_total_relation_size(to_regclass(%s)), 0)", [relation])
    return int(cursor.fetchone()[0])


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000, help="audit rows in the month (default 1,000,000)")
    args = parser.parse_args(argv)
    rows = 5_000 if args.quick else args.rows

    result = Result(
        name=NAME, title="Bench 5: audit retention, one month partition",
        headers=["operation", "rows", "seconds", "rows/s", "WAL written (MB)", "partition size after (MB)"],
    )
    with scratch_database(NAME, prefix=args.db_prefix) as scratch:
        use_django(scratch)
        from django.db import connection, transaction

        from audit.partitions import audit_partitions_drop_older_than, audit_partitions_ensure

        month = _month_back(datetime.now(UTC).date(), 24)
        following = _month_back(month, -1)
        created = audit_partitions_ensure(months_ahead=0, start_month=month)
        if len(created) != 1:
            raise RuntimeError(f"expected one new partition for {month}, got {created}")
        partition = created[0]
        bounds = {"lower": month.isoformat(), "upper": following.isoformat(), "n": rows}

        def load() -> float:
            with Timer() as timer, transaction.atomic(), connection.cursor() as cursor:
                cursor.execute(_LOAD, bounds)
            with connection.cursor() as cursor:
                cursor.execute(f"VACUUM ANALYZE {partition}")
                cursor.execute(f"SELECT count(*) FROM {partition}")
                if cursor.fetchone()[0] != rows:
                    raise RuntimeError(f"{partition} does not hold the {rows} rows just loaded")
            return timer.seconds

        loaded = load()
        with connection.cursor() as cursor:
            full_size = _size(cursor, partition)
        result.add("load (INSERT ... SELECT, for reference)", rows, loaded, rows / loaded, float("nan"),
                   full_size / 2**20)

        with connection.cursor() as cursor:
            start = _wal_lsn(cursor)
            with transaction.atomic():
                # audit_logs refuses DELETE (audit migration 0006): the bench measures what row-by-row retention
                # would cost, as the owner of its scratch database, with the guard off for this statement only.
                cursor.execute(f"ALTER TABLE {partition} DISABLE TRIGGER audit_logs_append_only")
                with Timer() as delete:
                    cursor.execute(
                        "DELETE FROM audit_logs WHERE created_at >= %(lower)s AND created_at < %(upper)s", bounds
                    )
                deleted = cursor.rowcount
                cursor.execute(f"ALTER TABLE {partition} ENABLE TRIGGER audit_logs_append_only")
            delete_wal = _wal_since(cursor, start)
            after_delete = _size(cursor, partition)
            start = _wal_lsn(cursor)
            with Timer() as vacuum:
                cursor.execute(f"VACUUM {partition}")
            vacuum_wal = _wal_since(cursor, start)
            after_vacuum = _size(cursor, partition)
        if deleted != rows:
            raise RuntimeError(f"DELETE removed {deleted} rows, expected {rows}")
        result.add("DELETE of the month's rows", rows, delete.seconds, rows / delete.seconds,
                   delete_wal / 2**20, after_delete / 2**20)
        result.add("VACUUM after the DELETE", rows, vacuum.seconds, rows / vacuum.seconds,
                   vacuum_wal / 2**20, after_vacuum / 2**20)
        result.add("DELETE + VACUUM", rows, delete.seconds + vacuum.seconds,
                   rows / (delete.seconds + vacuum.seconds), (delete_wal + vacuum_wal) / 2**20, after_vacuum / 2**20)

        load()
        with connection.cursor() as cursor:
            start = _wal_lsn(cursor)
        with Timer() as drop:
            dropped = audit_partitions_drop_older_than(months=12)
        with connection.cursor() as cursor:
            drop_wal = _wal_since(cursor, start)
            after_drop = _size(cursor, partition)
        if dropped != [partition]:
            raise RuntimeError(f"retention dropped {dropped}, expected [{partition}]")
        result.add("drop partition (audit_partitions_drop_older_than)", rows, drop.seconds, float("nan"),
                   drop_wal / 2**20, after_drop / 2**20)
        postgres = server_version(scratch)

    ratio = (delete.seconds + vacuum.seconds) / drop.seconds
    result.data.update({
        "partition": partition, "rows": rows, "partition_bytes": full_size,
        "delete_seconds": delete.seconds, "vacuum_seconds": vacuum.seconds, "drop_seconds": drop.seconds,
        "delete_plus_vacuum_over_drop": ratio, "delete_over_drop": delete.seconds / drop.seconds,
    })
    result.notes += [
        f"Ratio: DELETE alone took {delete.seconds / drop.seconds:,.0f}x the partition drop, DELETE + VACUUM "
        f"{ratio:,.0f}x. The drop does no per-row work: catalog changes and unlinking the partition's files, "
        "with next to no WAL.",
        "After a DELETE the partition keeps its size until VACUUM, and plain VACUUM returns only the trailing "
        "empty pages to the operating system; the dropped partition's files are gone at once.",
        "DETACH PARTITION takes an ACCESS EXCLUSIVE lock on audit_logs for that moment: the retention function "
        "sets lock_timeout 5 s so a long query ahead of it cannot make audit INSERTs queue behind it.",
    ]
    finish(result, args, postgres=postgres)
    return 0


if __name__ == "__main__":
    sys.exit(main())
