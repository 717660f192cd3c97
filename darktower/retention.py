"""The daily retention run: every retention job the apps registered (darktower.registry), in their order.

Each app keeps its own rules and registers them from its AppConfig.ready(); the batched delete they share is
darktower.db.delete_in_batches. The daily task and `manage.py prune` run them through `retention_run`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from darktower.registry import retention_jobs

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RetentionCount:
    name: str
    count: int


def retention_run(*, dry_run: bool = False) -> list[RetentionCount]:
    """Run every registered row-retention job; return what each deleted (or would delete). Whole objects (audit
    partitions) are dropped by the prune steps, not here."""
    counts = []
    for job in retention_jobs():
        count = job.run(dry_run=dry_run)
        counts.append(RetentionCount(job.name, count))
        logger.info("retention %s: %s %d", job.name, "would delete" if dry_run else "deleted", count)
    return counts
