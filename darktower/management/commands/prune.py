"""`manage.py prune [--dry-run]`: every registered retention job and prune step, with counts; the daily beat runs
the same."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand

from darktower.registry import prune_steps
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
        for step in prune_steps():
            dropped = step.run(dry_run=dry_run)
            listed = f" ({', '.join(dropped)})" if dropped else ""
            self.stdout.write(f"{step.name}: {verb} {len(dropped)}{listed}")
