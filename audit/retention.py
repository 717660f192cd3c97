"""Retention of the audit app's row tables: idempotency keys past expiry and processed outbox events.

audit_logs is not pruned row by row: whole monthly partitions are dropped (audit.partitions).
"""

from __future__ import annotations

from django.conf import settings

from darktower.db import RETENTION_BATCH_SIZE, delete_in_batches


def idempotency_keys_prune_expired(*, dry_run: bool = False, batch_size: int = RETENTION_BATCH_SIZE) -> int:
    """Delete idempotency keys past expires_at (idx_idempotency_expires): they can no longer be replayed."""
    return delete_in_batches(
        table="idempotency_keys", pk="id", where="expires_at < now()", params={},
        batch_size=batch_size, dry_run=dry_run,
    )


def outbox_events_prune_processed(*, dry_run: bool = False, batch_size: int = RETENTION_BATCH_SIZE) -> int:
    """Delete outbox events processed more than RETENTION_OUTBOX_DAYS ago (idx_outbox_events_processed).
    Poison rows (failed_at set, never processed) stay until an operator retries or deletes them."""
    return delete_in_batches(
        table="outbox_events", pk="id",
        where="processed_at < now() - make_interval(days => %(days)s)",
        params={"days": settings.RETENTION_OUTBOX_DAYS}, batch_size=batch_size, dry_run=dry_run,
    )
