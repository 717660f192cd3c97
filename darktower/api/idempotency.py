"""Idempotency-Key for POST requests, stored in the idempotency_keys table.

The store is the model settings.IDEMPOTENCY_KEY_MODEL names ("app_label.ModelName", as AUTH_USER_MODEL): the
API plumbing imports no app, the app that owns the table owns its migrations and its retention.

Keys are per principal (user, API key; for anonymous guests the client address with a keyed hash of the
guest's display name, see `guest_principal`) and remembered for IDEMPOTENCY_KEY_TTL_SECONDS. The request
hash is SHA-256 over method, path and raw body. Responses that carry a secret are stored with it redacted
(the view's `idempotency_redact`); the view decides what a replay answers in its place (`replayed_body`).

1. `idempotency_begin` inserts an `in_progress` row with INSERT ... ON CONFLICT DO NOTHING, committed at
   once, so a concurrent duplicate finds it and answers 409 instead of executing a second time. A row that
   exists already is replayed (completed, same hash), refused (different hash: 422; still in progress: 409),
   or taken over when it has expired or its request was abandoned (the process died mid-request).
2. The view runs its handler in a transaction and `idempotency_complete` stores status and body in that same
   transaction, so the change and its recorded response commit together. A 4xx raised by the handler rolls
   the change back and is stored right after; a 5xx is not stored (the row is deleted) so a retry runs again.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import connection

from darktower.errors import Conflict, DomainError, InvalidInput

HEADER = "Idempotency-Key"
MAX_KEY_LENGTH = 255
# An in-progress row older than this belongs to a request whose process died; a retry may take it over.
# Far above any request's run time (gunicorn's timeout is 30 s).
ABANDONED_AFTER_SECONDS = 300


class IdempotencyKeyReused(DomainError):
    """The key was used before for a different request (422)."""

    code = "idempotency_key_reused"


@dataclass(frozen=True)
class IdempotencyClaim:
    row_id: int


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: Any


def request_hash(*, method: str, path: str, body: bytes) -> str:
    digest = hashlib.sha256()
    digest.update(method.upper().encode())
    digest.update(b"\n")
    digest.update(path.encode())
    digest.update(b"\n")
    digest.update(body)
    return digest.hexdigest()


def guest_principal(*, ip_address: str, display_name: str) -> str:
    """The principal of an anonymous guest's keys: its address and a keyed hash of the display name it joins
    as, so that two guests behind one NAT who send the same key never get each other's participant, and the
    table never holds the name."""
    digest = hmac.new(settings.SECRET_KEY.encode(), display_name.encode(), hashlib.sha256).hexdigest()[:32]
    return f"guest:{ip_address[:45]}:{digest}"


def validate_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not all("!" <= char <= "~" for char in key):
        raise InvalidInput(
            "Invalid Idempotency-Key.",
            fields={HEADER: [f"1 to {MAX_KEY_LENGTH} visible ASCII characters."]},
        )
    return key


# The claim commits on its own (autocommit) without waiting for its WAL to reach the disk (synchronous_commit off
# for this one statement's transaction): it matters only while its request runs. A crash that loses it loses that
# request too, which never committed, so a retry rightly runs again; and the request's own commit, synchronous,
# flushes the WAL written before it, the claim's included.
_INSERT_SQL = """
INSERT INTO idempotency_keys
    (key, principal, request_method, request_path, request_hash, state, created_at, expires_at)
SELECT %(key)s, %(principal)s, %(method)s, %(path)s, %(hash)s, 'in_progress', now(),
       now() + make_interval(secs => %(ttl)s)
FROM (SELECT set_config('synchronous_commit', 'off', true)) AS this_transaction_only
ON CONFLICT (principal, key) DO NOTHING
RETURNING id
"""

# Served by uq_idempotency_keys_principal_key.
_TAKE_OVER_SQL = """
UPDATE idempotency_keys
SET request_method = %(method)s, request_path = %(path)s, request_hash = %(hash)s, state = 'in_progress',
    response_status = NULL, response_body = NULL, created_at = now(),
    expires_at = now() + make_interval(secs => %(ttl)s)
WHERE principal = %(principal)s AND key = %(key)s
  AND (expires_at <= now()
       OR (state = 'in_progress' AND created_at < now() - make_interval(secs => %(abandoned)s)))
RETURNING id
"""



def idempotency_begin(
    *, principal: str, key: str, method: str, path: str, body: bytes
) -> IdempotencyClaim | StoredResponse:
    """Claim the key for this request, or return the response stored for it. Runs in autocommit (outside the
    handler's transaction) so that the claim is visible to concurrent duplicates immediately."""
    params: dict[str, str | int] = {
        "key": validate_key(key), "principal": principal, "method": method.upper(), "path": path[:255],
        "hash": request_hash(method=method, path=path, body=body), "ttl": settings.IDEMPOTENCY_KEY_TTL_SECONDS,
        "abandoned": ABANDONED_AFTER_SECONDS,
    }
    # A row can vanish between statements (its 5xx request released it): then the insert wins next round.
    for _ in range(3):
        with connection.cursor() as cursor:
            cursor.execute(_INSERT_SQL, params)
            row = cursor.fetchone()
            if row is None:
                cursor.execute(_TAKE_OVER_SQL, params)
                row = cursor.fetchone()
            if row is not None:
                return IdempotencyClaim(row_id=row[0])
        # Through the ORM: the JSONField decodes response_body (Django's psycopg setup leaves jsonb as text).
        existing = (
            apps.get_model(settings.IDEMPOTENCY_KEY_MODEL).objects.filter(principal=principal, key=key)
            .values_list("request_hash", "state", "response_status", "response_body")
            .first()
        )
        if existing is None:
            continue
        stored_hash, state, status, body_json = existing
        if stored_hash != params["hash"]:
            raise IdempotencyKeyReused(
                "This Idempotency-Key was used for a different request.", fields={HEADER: ["Already used."]}
            )
        if state != "completed":
            raise Conflict("A request with this Idempotency-Key is still in progress.")
        assert status is not None  # idempotency_keys_completed_has_response: a completed key has its status
        return StoredResponse(status=status, body=body_json)
    raise Conflict("A request with this Idempotency-Key is still in progress.")


def idempotency_complete(claim: IdempotencyClaim, *, status: int, body: bytes | None) -> None:
    """Record the response (`body`: its JSON text, as rendered). Called inside the handler's transaction when the
    handler succeeded."""
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE idempotency_keys SET state = 'completed', response_status = %s, response_body = %s::jsonb "
            "WHERE id = %s AND state = 'in_progress'",
            [status, None if body is None else body.decode(), claim.row_id],
        )


def idempotency_release(claim: IdempotencyClaim) -> None:
    """Forget an unfinished claim (the request failed with a 5xx): a retry with the same key runs again."""
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM idempotency_keys WHERE id = %s AND state = 'in_progress'", [claim.row_id])
