"""Create a service credential (an MC or MH fleet's OAuth client) and print its client id and secret once."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services.service_tokens import SERVICE_SCOPES, service_credential_create
from darktower.errors import Conflict, InvalidInput


class Command(BaseCommand):
    help = (
        "Create a service credential allowed the given scopes and print its client id and secret. "
        "The secret is shown only here, once: store it now."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--name", required=True, help="What the credential is for, e.g. 'mc us-east-1 fleet'.")
        parser.add_argument(
            "--scopes", required=True,
            help=f"Comma-separated scopes, from: {', '.join(sorted(SERVICE_SCOPES))}.",
        )
        parser.add_argument(
            "--client-id", default=None,
            help="The client id, e.g. 'meeting-controller' for a fleet configured with it (default: a random one).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            created = service_credential_create(
                name=options["name"], scopes=options["scopes"].split(","), client_id=options["client_id"]
            )
        except InvalidInput as exc:
            details = "; ".join(message for messages in exc.fields.values() for message in messages)
            raise CommandError(f"{exc.message} {details}".strip()) from None
        except Conflict as exc:
            raise CommandError(exc.message) from None
        credential = created.credential
        self.stdout.write(f"client_id: {credential.client_id}")
        self.stdout.write(f"client_secret: {created.client_secret}")
        self.stdout.write(f"scopes: {' '.join(credential.scopes)}")
        self.stderr.write("The secret is not stored and cannot be shown again.")
