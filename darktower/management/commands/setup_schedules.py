"""`manage.py setup_schedules`: create or reset the periodic jobs (darktower/schedules.py) in the beat's tables.

Idempotent. Values an operator tuned in the admin are put back to the defaults in the table.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from darktower.schedules import schedules_apply


class Command(BaseCommand):
    help = "Create or update the periodic tasks the Celery beat runs (by name; safe to run again)."

    def handle(self, *args: Any, **options: Any) -> None:
        for name in schedules_apply():
            self.stdout.write(f"scheduled {name}")
