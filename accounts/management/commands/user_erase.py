"""Erase a user and their personal data (accounts.services.personal_data.user_erase), for an operator answering
a request for erasure. Erasing a user that is already gone says so and changes nothing."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.services.personal_data import VIA_COMMAND, user_erase, user_id_by_email


class Command(BaseCommand):
    help = "Erase a user: end their meetings, delete their recordings, keys and account, anonymise the rest."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email", help="the user's email address")

    def handle(self, *args: Any, **options: Any) -> None:
        user_id = user_id_by_email(options["email"])
        erasure = None if user_id is None else user_erase(user_id=user_id, actor_user_id=None, via=VIA_COMMAND)
        if erasure is None or not erasure.erased:
            self.stdout.write("No user with that email: nothing to erase.")
            return
        counts = ", ".join(f"{name} {count}" for name, count in sorted(erasure.counts.items()))
        self.stdout.write(f"Erased user {user_id} ({counts}).")
