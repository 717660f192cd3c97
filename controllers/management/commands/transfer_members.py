"""Move meeting controllers (or media handlers) to another service credential: how a fleet changes credentials."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.models import User
from controllers.members import CONTROLLERS, HANDLERS
from controllers.services.ownership import members_transfer
from darktower.errors import DomainError


class Command(BaseCommand):
    help = (
        "Move members to the credential --to: the ids given, or every member of --from. The old credential's calls "
        "for them are refused from then on (by each gRPC process from its next heartbeat flush)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("member_ids", nargs="*", help="controller ids (handler ids with --handlers)")
        parser.add_argument("--to", required=True, dest="to_client_id", help="client id of the new owner")
        parser.add_argument("--from", dest="from_client_id", help="only members of this client id (all if no ids)")
        parser.add_argument("--handlers", action="store_true", help="media handlers instead of meeting controllers")
        parser.add_argument("--operator", help="email of the operator the audit rows name (default: system)")

    def handle(self, *args: Any, **options: Any) -> None:
        actor_user_id = None
        if options["operator"]:
            operator = User.objects.filter(email__iexact=options["operator"], is_staff=True).first()
            if operator is None:
                raise CommandError("--operator: no staff user with that email")
            actor_user_id = operator.pk
        try:
            moved = members_transfer(
                kind=HANDLERS if options["handlers"] else CONTROLLERS, to_client_id=options["to_client_id"],
                member_ids=options["member_ids"], from_client_id=options["from_client_id"],
                actor_user_id=actor_user_id,
            )
        except DomainError as exc:
            raise CommandError(str(exc.message)) from None
        for transfer in moved:
            self.stdout.write(f"{transfer.member_id}: {transfer.from_client_id or '(unowned)'} -> "
                              f"{options['to_client_id']}")
        self.stdout.write(f"{len(moved)} moved")
