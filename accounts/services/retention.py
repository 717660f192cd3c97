"""Retention of API keys (kept until revoked or expired): expired keys go after a grace period."""

from __future__ import annotations

from django.conf import settings

from darktower.db import RETENTION_BATCH_SIZE, delete_in_batches


def api_keys_prune_expired(*, dry_run: bool = False, batch_size: int = RETENTION_BATCH_SIZE) -> int:
    """Delete API keys that expired more than RETENTION_EXPIRED_API_KEYS_DAYS ago. The grace period keeps
    a just-expired key visible to its owner (and its 401s explainable) for a while."""
    return delete_in_batches(
        table="api_keys", pk="key_id",
        where="expires_at < now() - make_interval(days => %(days)s)",
        params={"days": settings.RETENTION_EXPIRED_API_KEYS_DAYS}, batch_size=batch_size, dry_run=dry_run,
    )
