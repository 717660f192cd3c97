"""`manage.py seed_demo [--reset | --if-empty]`: load the demo data set (meetings/demo_data.py).

Runs only with DEBUG on: the demo users share a published password.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from controllers.models import MeetingController
from meetings.demo_data import DEMO_PASSWORD, DEMO_USERS, DemoSummary, demo_data_load
from meetings.models import Meeting


def _by_state(counts: dict[str, int]) -> str:
    return ", ".join(f"{state} {count}" for state, count in sorted(counts.items()))


class Command(BaseCommand):
    help = "Load the demo data set (idempotent). --reset deletes the demo rows first; --if-empty loads only into "
    "a database without meetings and controllers."

    def add_arguments(self, parser: ArgumentParser) -> None:
        mode = parser.add_mutually_exclusive_group()
        mode.add_argument("--reset", action="store_true", help="Delete the demo rows, then load them again.")
        mode.add_argument(
            "--if-empty", action="store_true", help="Load only when no meetings and no controllers exist."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("seed_demo only runs with DEBUG on: its demo users share a published password.")
        if options["if_empty"] and (Meeting.objects.exists() or MeetingController.objects.exists()):
            self.stdout.write("Demo data not loaded: the database already has meetings or controllers.")
            return
        summary = demo_data_load(reset=options["reset"])
        self._print(summary, reset=options["reset"])

    def _print(self, summary: DemoSummary, *, reset: bool) -> None:
        action = f"reset ({summary.deleted} rows deleted) and loaded" if reset else "loaded"
        self.stdout.write(f"Demo data {action}: {summary.created} rows created, {summary.audit_entries} audit entries.")
        rows = [
            ("users", f"{summary.users}"),
            ("meetings", f"{sum(summary.meetings.values())} ({_by_state(summary.meetings)})"),
            ("participants", f"{summary.participants}"),
            ("recordings", f"{summary.recordings}"),
            ("controllers", f"{sum(summary.meeting_controllers.values())} ({_by_state(summary.meeting_controllers)})"),
            ("media handlers", f"{sum(summary.media_handlers.values())} ({_by_state(summary.media_handlers)})"),
            ("assignments", f"{summary.active_assignments} active"),
        ]
        for label, value in rows:
            self.stdout.write(f"  {label:<15}{value}")
        self.stdout.write(f"Demo users ({', '.join(DEMO_USERS)}) sign in with the password {DEMO_PASSWORD!r}.")
