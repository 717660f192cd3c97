"""`manage.py prune [--dry-run]`: every retention job (seed 002), with counts; the daily beat runs the same."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand

from audit.partitions import audit_partitions_drop_older_than
from darktower.retention import retention_run


class Command(BaseCommand):
    help = "Delete data past its retention period (meetings, recordings, keys, outbox rows, audit partitions)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Count what would be deleted; delete nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        dry_run = options["dry_run"]
        verb = "would delete" if dry_run else "deleted"
        for row in retention_run(dry_run=dry_run):
            self.stdout.write(f"{row.name}: {verb} {row.count}")
        partitions = audit_partitions_drop_older_than(months=settings.RETENTION_AUDIT_MONTHS, dry_run=dry_run)
        listed = f" ({', '.join(partitions)})" if partitions else ""
        self.stdout.write(f"audit_partitions: {verb} {len(partitions)}{listed}")
