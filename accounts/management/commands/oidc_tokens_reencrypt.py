"""Re-encrypt every stored provider token under the first key of OIDC_TOKEN_ENCRYPTION_KEYS (after a rotation)."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from accounts.services.oidc import oauth_provider_tokens_reencrypt


class Command(BaseCommand):
    help = (
        "Rewrite every provider access and refresh token under the first OIDC_TOKEN_ENCRYPTION_KEYS key; once it "
        "has run, the other keys can be dropped."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--batch-size", type=int, default=500, help="Rows per transaction (default 500).")

    def handle(self, *args: Any, **options: Any) -> None:
        rewritten = oauth_provider_tokens_reencrypt(batch_size=options["batch_size"])
        self.stdout.write(f"{rewritten} provider link(s) re-encrypted")
