"""`manage.py flush`, able to empty this schema.

Django's flush TRUNCATEs the tables of managed models only. audit_logs is unmanaged (a partitioned table
made by RunSQL) and references users, and PostgreSQL refuses to TRUNCATE a referenced table unless every
referencing table is truncated in the same statement. CASCADE takes audit_logs along. The test runner
flushes through this command after every transactional test, so without it those tests cannot tear down.
"""

from __future__ import annotations

from typing import Any

from django.core.management.commands import flush


class Command(flush.Command):
    def handle(self, **options: Any) -> None:
        options["allow_cascade"] = True
        super().handle(**options)
