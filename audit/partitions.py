"""Monthly partitions of audit_logs (see audit migration 0001).

Creation lives in the SQL function audit_logs_ensure_partitions, so that the migration, this module and an
operator at psql all share one implementation (and its advisory lock).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime

from django.conf import settings
from django.db import connection, transaction

from darktower.errors import InvalidInput

# Bounds come from the catalog as text ("FOR VALUES FROM ('...') TO ('...')"); PostgreSQL itself casts
# them back to timestamptz, so no Python parsing of its timestamp format is involved. The bounds are deparsed in
# the parent's context (they are constants; the parent is never dropped): deparsing in the child's would open a
# partition that a concurrent drop may just have removed ("could not open relation with OID ...").
_LIST_PARTITIONS = r"""
SELECT child.relname,
       (regexp_match(pg_get_expr(child.relpartbound, pg_inherits.inhparent), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
       (regexp_match(pg_get_expr(child.relpartbound, pg_inherits.inhparent), 'TO \(''([^'']+)''\)'))[1]::timestamptz,
       pg_get_expr(child.relpartbound, pg_inherits.inhparent) = 'DEFAULT'
FROM pg_inherits
JOIN pg_class child ON child.oid = pg_inherits.inhrelid
WHERE pg_inherits.inhparent = 'audit_logs'::regclass
ORDER BY 2 NULLS LAST, 1
"""


@dataclass(frozen=True)
class PartitionInfo:
    """One partition of audit_logs: [lower, upper) in UTC, or the default partition (no bounds)."""

    name: str
    lower: datetime | None
    upper: datetime | None
    is_default: bool


def audit_partitions_ensure(*, months_ahead: int, start_month: date | None = None) -> list[str]:
    """Create the partitions for start_month (default: the current UTC month) and the `months_ahead`
    months after it. Returns the names created; partitions that already exist are left alone. Rows the
    default partition holds for a new month move into that month's partition."""
    if months_ahead < 0:
        raise InvalidInput("months_ahead must be >= 0")
    with transaction.atomic(), connection.cursor() as cursor:
        if start_month is None:
            cursor.execute("SELECT audit_logs_ensure_partitions(%s)", [months_ahead])
        else:
            cursor.execute("SELECT audit_logs_ensure_partitions(%s, %s)", [months_ahead, start_month])
        return [row[0] for row in cursor.fetchall()]


def audit_partitions_list() -> list[PartitionInfo]:
    """Every partition of audit_logs, oldest first, the default partition last."""
    with connection.cursor() as cursor:
        cursor.execute(_LIST_PARTITIONS)
        return [
            PartitionInfo(name=name, lower=lower, upper=upper, is_default=is_default)
            for name, lower, upper, is_default in cursor.fetchall()
        ]


# DETACH takes an ACCESS EXCLUSIVE lock on audit_logs: queued behind a long query, it would hold up every audit
# INSERT behind it, so it gives up quickly and the next run tries again. (DETACH ... CONCURRENTLY is not
# allowed while the table has a default partition.)
_DETACH_LOCK_TIMEOUT = "5s"


def audit_partitions_drop_older_than(*, months: int, dry_run: bool = False) -> list[str]:
    """Detach and drop every monthly partition entirely older than `months` months (upper bound at or before
    the database's now() minus `months`): O(1) in its rows, no DELETE. The default partition is never
    touched. Returns the names dropped (with dry_run, the names that would be)."""
    if months < 1:
        raise InvalidInput("months must be >= 1")
    with connection.cursor() as cursor:
        cursor.execute("SELECT now() - make_interval(months => %s)", [months])
        cutoff = cursor.fetchone()[0]
    expired = [
        partition.name
        for partition in audit_partitions_list()
        if not partition.is_default and partition.upper is not None and partition.upper <= cutoff
    ]
    if dry_run:
        return expired
    dropped = []
    for name in expired:
        quoted = connection.ops.quote_name(name)
        with transaction.atomic(), connection.cursor() as cursor:
            # The creator's lock: no partition appears or moves rows while one is dropped.
            cursor.execute("SELECT pg_advisory_xact_lock(hashtext('audit_logs_ensure_partitions'))")
            cursor.execute(f"SET LOCAL lock_timeout = '{_DETACH_LOCK_TIMEOUT}'")
            cursor.execute("SELECT to_regclass(%s) IS NOT NULL", [name])
            if not cursor.fetchone()[0]:
                continue  # a concurrent run dropped it first
            cursor.execute(f"ALTER TABLE audit_logs DETACH PARTITION {quoted}")
            cursor.execute(f"DROP TABLE {quoted}")
        dropped.append(name)
    return dropped


def audit_partitions_prune(*, dry_run: bool = False) -> list[str]:
    """`manage.py prune`'s step: drop the partitions past RETENTION_AUDIT_MONTHS (names dropped, or would be)."""
    return audit_partitions_drop_older_than(months=settings.RETENTION_AUDIT_MONTHS, dry_run=dry_run)
