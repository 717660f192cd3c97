"""`manage.py create_audit_partitions [--months N]`: create the audit_logs partitions for this month and the
next N months (Celery beat does the same daily; this is the operator's door)."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from audit.partitions import audit_partitions_ensure
from darktower.errors import InvalidInput


class Command(BaseCommand):
    help = "Create the monthly audit_logs partitions for the current month and the next N months."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument(
            "--months",
            type=int,
            default=None,
            help="How many months ahead of the current one (default: settings.AUDIT_PARTITIONS_AHEAD_MONTHS).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        months = options["months"] if options["months"] is not None else settings.AUDIT_PARTITIONS_AHEAD_MONTHS
        try:
            created = audit_partitions_ensure(months_ahead=months)
        except InvalidInput as exc:
            raise CommandError(exc.message) from None
        for name in created:
            self.stdout.write(f"created {name}")
        self.stdout.write(f"{len(created)} created; this month and the next {months} months have partitions")
