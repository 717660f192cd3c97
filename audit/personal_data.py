"""What the audit app holds of a user: the audit events they acted in (exported; kept at erasure, where the
database's ON DELETE SET NULL clears their actor, address and user agent), and the idempotency rows of their
requests (deleted at erasure: a stored response may carry their display name)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

from django.db import connection

from audit.models import AuditLog

ROWS_PER_FETCH = 500

AUDIT_EVENT_FIELDS = (
    "id", "created_at", "event_type", "action", "result", "target_type", "target_id", "error_message",
    "ip_address", "user_agent", "metadata",
)

# The idempotency rows of the user's requests: by their bearer token (user:<id>) and by each of their API keys
# (apikey:<id>). The keys are the accounts app's table, read in this statement only (the app sits above this
# one), and still there: erasure steps run before the account's rows are deleted.
_DELETE_IDEMPOTENCY_SQL = """
DELETE FROM idempotency_keys
WHERE principal = 'user:' || %(user_id)s::text
   OR principal IN (SELECT 'apikey:' || key_id::text FROM api_keys WHERE user_id = %(user_id)s)
"""


def audit_events_of_user(*, user_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    """The audit events the user is the actor of, oldest first (idx_audit_actor on every partition)."""
    events = AuditLog.objects.filter(actor_user_id=user_id).order_by("created_at", "id").values(*AUDIT_EVENT_FIELDS)
    return events.iterator(chunk_size=ROWS_PER_FETCH)


def idempotency_keys_erase(*, user_id: uuid.UUID) -> dict[str, int]:
    with connection.cursor() as cursor:
        cursor.execute(_DELETE_IDEMPOTENCY_SQL, {"user_id": user_id})
        return {"idempotency_keys_deleted": cursor.rowcount}
