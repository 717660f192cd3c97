"""Celery entry points of the audit app: thin, the work is in audit.relay and audit.partitions."""

from __future__ import annotations

import logging

from celery import shared_task
from django.conf import settings

from audit.partitions import audit_partitions_drop_older_than, audit_partitions_ensure
from audit.relay import outbox_relay
from darktower.celery import JobTask
from darktower.metrics import OUTBOX_POISONED

logger = logging.getLogger(__name__)


@shared_task(base=JobTask, name="audit.tasks.relay_outbox", time_limit=60)
def relay_outbox() -> dict[str, int]:
    result = outbox_relay()
    if result.poisoned:
        OUTBOX_POISONED.inc(len(result.poisoned))
    return {"processed": len(result.processed), "failed": len(result.failed), "poisoned": len(result.poisoned)}


@shared_task(base=JobTask, name="audit.tasks.maintain_audit_partitions")
def maintain_audit_partitions() -> dict[str, list[str]]:
    created = audit_partitions_ensure(months_ahead=settings.AUDIT_PARTITIONS_AHEAD_MONTHS)
    dropped = audit_partitions_drop_older_than(months=settings.RETENTION_AUDIT_MONTHS)
    logger.info("audit partitions: created %s, dropped %s", created or "none", dropped or "none")
    return {"created": created, "dropped": dropped}
