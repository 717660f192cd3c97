"""Retention (seed 002 "Data Retention"): the batched delete every retention job uses, and the daily run.

Each app keeps its own rules (meetings/services/retention.py, accounts/services/retention.py,
audit/retention.py, controllers/services/transitions.py); this module runs them in order for the daily task
and `manage.py prune`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import connection, transaction

logger = logging.getLogger(__name__)

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


@dataclass(frozen=True)
class RetentionCount:
    name: str
    count: int


def _jobs() -> list[tuple[str, Callable[..., int]]]:
    # Imported here: each of these modules imports delete_in_batches from this one.
    from accounts.services.retention import api_keys_prune_expired
    from audit.retention import idempotency_keys_prune_expired, outbox_events_prune_processed
    from controllers.services.transitions import health_transitions_prune
    from meetings.services.retention import assignments_prune_ended, meetings_prune_ended, recordings_prune

    # Recordings before meetings: a meeting past its retention is kept while it has recordings within theirs.
    return [
        ("recordings", recordings_prune),
        ("meetings", meetings_prune_ended),
        ("ended_assignments", assignments_prune_ended),
        ("expired_api_keys", api_keys_prune_expired),
        ("idempotency_keys", idempotency_keys_prune_expired),
        ("processed_outbox_events", outbox_events_prune_processed),
        ("health_transitions", health_transitions_prune),
    ]


def retention_run(*, dry_run: bool = False) -> list[RetentionCount]:
    """Run every row-retention job; return what each deleted (or would delete). Audit partitions are
    dropped whole by audit.partitions.audit_partitions_drop_older_than, not here."""
    counts = []
    for name, job in _jobs():
        count = job(dry_run=dry_run)
        counts.append(RetentionCount(name, count))
        logger.info("retention %s: %s %d", name, "would delete" if dry_run else "deleted", count)
    return counts
