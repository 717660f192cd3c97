"""`manage.py sweep_stale [--dry-run]`: the stale-heartbeat sweep the beat runs every few seconds."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controllers.services.health import SWEEP_TARGETS, controllers_sweep_stale


class Command(BaseCommand):
    help = "Mark controllers and media handlers whose heartbeats are stale unhealthy (disruption guard applies)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Report what would be marked; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        result = controllers_sweep_stale(dry_run=options["dry_run"])
        if result.skipped:
            raise CommandError("another sweep is running; try again in a moment")
        verb = "would mark" if result.dry_run else "marked"
        for row in result.disrupted:
            self.stderr.write(
                f"region {row.region} disrupted: {row.stale} of {row.live} live {row.target_type}s stale; "
                "none marked there"
            )
        for target in SWEEP_TARGETS:
            ids = result.ids(target.target_type)
            listed = f": {', '.join(ids)}" if ids else ""
            self.stdout.write(f"{verb} {len(ids)} {target.target_type}(s) unhealthy{listed}")
