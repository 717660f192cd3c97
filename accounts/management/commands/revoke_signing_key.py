"""End every token a compromised signing key signed: the key leaves the JWKS now (a new key is made active first
when it was the active one), and every process refuses its tokens within SIGNING_KEY_CACHE_SECONDS."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.signing import signing_key_revoke
from darktower.errors import NotFound


class Command(BaseCommand):
    help = "Revoke a JWT signing key by its kid: every token it signed stops working."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kid", help="the key id (JWT header kid) to revoke")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            revoked = signing_key_revoke(kid=options["kid"])
        except NotFound as exc:
            raise CommandError(str(exc.message)) from None
        self.stdout.write(f"revoked {revoked.kid}")
        if revoked.replacement_kid:
            self.stdout.write(f"active {revoked.replacement_kid}")
