"""Revoke a service credential: no new tokens, and its unexpired tokens go on the blacklist."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services.service_tokens import service_credential_revoke
from darktower.errors import NotFound


class Command(BaseCommand):
    help = "Revoke a service credential by client id (idempotent)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("client_id")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            revocation = service_credential_revoke(client_id=options["client_id"])
        except NotFound as exc:
            raise CommandError(exc.message) from None
        client_id = options["client_id"]
        state = "revoked" if revocation.newly_revoked else "was already revoked"
        self.stdout.write(f"{client_id} {state}; {revocation.tokens_revoked} unexpired token(s) blacklisted")
