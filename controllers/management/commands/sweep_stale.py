"""`manage.py sweep_stale [--dry-run]`: the stale-heartbeat sweep the beat runs every few seconds."""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from controllers.members import MEMBER_KINDS
from controllers.services.health import SweepResult, controllers_sweep_stale


class Command(BaseCommand):
    help = "Mark controllers and media handlers whose heartbeats are stale unhealthy (disruption guard applies)."

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--dry-run", action="store_true", help="Report what would be marked; change nothing.")

    def handle(self, *args: Any, **options: Any) -> None:
        result = controllers_sweep_stale(dry_run=options["dry_run"])
        if result.skipped:
            raise CommandError("another sweep is running; try again in a moment")
        self._guards(result)
        verb = "would mark" if result.dry_run else "marked"
        for kind in MEMBER_KINDS:
            ids = result.ids(kind.target_type)
            listed = f": {', '.join(ids)}" if ids else ""
            self.stdout.write(f"{verb} {len(ids)} {kind.target_type}(s) unhealthy{listed}")

    def _guards(self, result: SweepResult) -> None:
        """What the guards decided (sweep gap, GC cut off, disrupted regions), on stderr like the log's warnings."""
        marked, spare, restart = (
            ("would be marked", "would spare", "would restart")
            if result.dry_run else ("was marked", "spared", "restarted")
        )
        if result.gap is not None:
            spared = ", ".join(f"{count} {target_type}(s)" for target_type, count in result.gap.spared.items())
            self.stderr.write(
                f"sweep gap: the sweep had not run for {result.gap.seconds:.1f} s (since "
                f"{result.gap.last_run_at.isoformat()}); nobody {marked}, every live member gets a fresh grace "
                f"period; {spare} {spared}"
            )
        if result.cut_off:
            regions = ", ".join(sorted({row.region for row in result.disrupted}))
            self.stderr.write(
                f"cut off: every region the guard can judge is disrupted at once ({regions}); nobody {marked} anywhere"
            )
        for row in result.disrupted:
            self.stderr.write(
                f"region {row.region} disrupted: {row.stale} of {row.live} live {row.target_type}s stale; "
                f"nobody {marked} there"
            )
        for target_type, count in result.hold_down_restarted.items():
            self.stderr.write(f"{restart} the hold-down of {count} silent recovering {target_type}(s)")
