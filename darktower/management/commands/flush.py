"""`manage.py flush`, able to empty this schema.

Django's flush TRUNCATEs the tables of managed models only. audit_logs is unmanaged (a partitioned table
made by RunSQL) and references users, and PostgreSQL refuses to TRUNCATE a referenced table unless every
referencing table is truncated in the same statement. CASCADE takes audit_logs along. The test runner
flushes through this command after every transactional test, so without it those tests cannot tear down.

audit_logs refuses TRUNCATE (audit migration 0006). Emptying the whole database is the owner's act: the
guard is disabled and enabled again inside this command's transaction, so no other session sees it off.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import flush
from django.db import connections, transaction

_TRUNCATE_GUARD = "audit_logs_no_truncate"


class Command(flush.Command):
    def handle(self, **options: Any) -> None:
        options["allow_cascade"] = True
        database = options["database"]
        with transaction.atomic(using=database), connections[database].cursor() as cursor:
            cursor.execute(
                "SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass('audit_logs') AND tgname = %s", [_TRUNCATE_GUARD]
            )
            guarded = cursor.fetchone() is not None
            if guarded:
                cursor.execute(f"ALTER TABLE audit_logs DISABLE TRIGGER {_TRUNCATE_GUARD}")
            super().handle(**options)
            if guarded:
                cursor.execute(f"ALTER TABLE audit_logs ENABLE TRIGGER {_TRUNCATE_GUARD}")
