"""Write a user's personal data (accounts.services.personal_data.user_export) to stdout as one JSON document,
piece by piece, for an operator answering a request for it."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services.personal_data import VIA_COMMAND, user_export, user_id_by_email
from darktower.errors import NotFound


class Command(BaseCommand):
    help = "Export a user's personal data as JSON (to stdout): profile, providers, keys, meetings, audit events."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("email", help="the user's email address")

    def handle(self, *args: Any, **options: Any) -> None:
        user_id = user_id_by_email(options["email"])
        try:
            if user_id is None:
                raise NotFound("No user with that email.")
            pieces = user_export(user_id=user_id, actor_user_id=None, via=VIA_COMMAND)
        except NotFound as exc:
            raise CommandError(str(exc.message)) from None
        for piece in pieces:
            self.stdout.write(piece, ending="")
