"""End every token a compromised signing key signed: the key leaves the JWKS now (a new key is made active first
when it was the active one), and every process refuses its tokens within SIGNING_KEY_CACHE_SECONDS."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.signing import signing_key_revoke
from darktower.errors import NotFound


class Command(BaseCommand):
    help = "Revoke a JWT signing key by its kid: every token it signed stops working."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("kid", help="the key id (JWT header kid) to revoke")

    def create_parser(self, prog_name: str, subcommand: str, **kwargs: Any) -> CommandParser:
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        parse_args = parser.parse_args
        known = {option for action in parser._actions for option in action.option_strings}

        def parse_kid_beginning_with_a_dash(args: Sequence[str] | None = None, namespace: Any = None) -> Any:
            # A kid is base64url and may begin with "-", which argparse takes for an unknown option unless "--"
            # comes before it.
            given = list(args or ())
            for index, arg in enumerate(given):
                if arg == "--":
                    break
                if arg.startswith("-") and arg.split("=", 1)[0] not in known:
                    given.insert(index, "--")
                    break
            return parse_args(given if args is not None else None, namespace)

        parser.parse_args = parse_kid_beginning_with_a_dash  # type: ignore[method-assign]
        return parser

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            revoked = signing_key_revoke(kid=options["kid"])
        except NotFound as exc:
            raise CommandError(str(exc.message)) from None
        self.stdout.write(f"revoked {revoked.kid}")
        if revoked.replacement_kid:
            self.stdout.write(f"active {revoked.replacement_kid}")
