"""Who owns a member: the service credential (client id) that registered it.

Only the owner may re-register a member, beat for it (MC heartbeats, MH load reports) and end the meetings it
hosts; any other credential, whatever its scopes, gets PERMISSION_DENIED, an audit row with result failure, and
changes nothing. A member without an owner (a row older than ownership, migration 0011) is claimed by the first
credential that names it in a registration or a beat (`member_claim`). Operators move members to another
credential with `members_transfer` (admin action, `manage.py transfer_members`): that is how a fleet changes
credentials. A revoked credential keeps its members until an operator moves them.

Other GC processes learn of a transfer the way they learn of an operator's drain: their next flush of a beat sent
by the old owner finds the row no longer matches (the flush's compare-and-set includes the owner), drops what the
process knew of the member, and the next beat loads it again (controllers.heartbeats).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import connection, transaction

from accounts.models import ServiceCredential
from audit.models import ActorType, AuditResult
from audit.services import AuditEntry, audit_record, audit_record_many
from controllers.members import MemberKind
from darktower.errors import InvalidInput, NotFound, PermissionDenied

# The scope a credential needs to own a member of each table (controllers.grpc.guard.SERVICE_SCOPES).
OWNER_SCOPES = {"meeting_controllers": "mc:register", "media_handlers": "mh:register"}


def owned_by_another(kind: MemberKind) -> PermissionDenied:
    """The refusal a caller gets for another credential's member (it does not name the owner)."""
    return PermissionDenied(f"{kind.label} is registered by another credential")


def member_access_refuse(
    *, kind: MemberKind, member_id: str, client_id: str, owner_client_id: str | None, action: str
) -> PermissionDenied:
    """Audit a call refused because `member_id` belongs to another credential, and return the error to raise.

    Its own transaction (or the caller's, which must commit it): the refused change itself is never made.
    """
    error = owned_by_another(kind)
    audit_record(
        event_type=kind.event("access_denied"), action=action, actor_type=ActorType.SERVICE,
        result=AuditResult.FAILURE, target_type=kind.target_type, target_id=member_id,
        error_message=str(error.message),
        metadata={"client_id": client_id, "owner_client_id": owner_client_id},
    )
    return error


def member_claim_audit(*, kind: MemberKind, member_id: str, client_id: str, via: str) -> None:
    """The audit row of an unowned member claimed by `client_id` (in the claiming transaction)."""
    audit_record(
        event_type=kind.event("claimed"), action="claim", actor_type=ActorType.SERVICE,
        target_type=kind.target_type, target_id=member_id, metadata={"client_id": client_id, "via": via},
    )


_CLAIM_SQL = "UPDATE {table} SET owner_client_id = %(client_id)s WHERE {pk} = %(id)s AND owner_client_id IS NULL"
_OWNER_SQL = "SELECT owner_client_id FROM {table} WHERE {pk} = %(id)s"


def member_claim(*, kind: MemberKind, member_id: str, client_id: str, via: str) -> str:
    """Claim `member_id` for `client_id` if it has no owner; returns its owner afterwards (`client_id` when this
    call or an earlier one of the same credential won). Compare-and-set: of two credentials claiming one row at
    once exactly one wins; the other gets the winner back. NotFound when the member has no row."""
    params = {"id": member_id, "client_id": client_id}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_CLAIM_SQL.format(table=kind.table, pk=kind.pk), params)
        if cursor.rowcount:
            member_claim_audit(kind=kind, member_id=member_id, client_id=client_id, via=via)
            return client_id
        cursor.execute(_OWNER_SQL.format(table=kind.table, pk=kind.pk), params)
        found = cursor.fetchone()
    if found is None:
        raise NotFound(f"unknown {kind.label}; register first")
    return found[0]


@dataclass(frozen=True)
class Transfer:
    member_id: str
    from_client_id: str | None


def members_transfer(
    *,
    kind: MemberKind,
    to_client_id: str,
    member_ids: Sequence[str] = (),
    from_client_id: str | None = None,
    actor_user_id: uuid.UUID | None = None,
) -> list[Transfer]:
    """Move members to the credential `to_client_id`: the ones named, or (none named) every member of
    `from_client_id`. The target must be an active credential holding the kind's scope (InvalidInput); an
    unknown member id is NotFound and nothing moves. One audit row per member moved, naming the operator
    (actor_type system when run without one). Members already owned by the target are left alone.

    The new owner may beat at once; each GC process refuses the old one from its next flush (see the module
    docstring).
    """
    scope = OWNER_SCOPES[kind.table]
    if not ServiceCredential.objects.filter(client_id=to_client_id, is_active=True, scopes__contains=[scope]).exists():
        raise InvalidInput(
            f"The target must be an active service credential with the {scope} scope.",
            fields={"to_client_id": ["unknown, revoked, or without the scope"]},
        )
    if not member_ids and from_client_id is None:
        raise InvalidInput("Name the members to move, or their current owner.", fields={"member_ids": ["required"]})
    where = f"{kind.pk} = ANY(%(ids)s)" if member_ids else "owner_client_id = %(from)s"
    if member_ids and from_client_id is not None:
        where += " AND owner_client_id = %(from)s"
    params = {"ids": list(member_ids), "from": from_client_id, "to": to_client_id}
    with transaction.atomic(), connection.cursor() as cursor:
        # Lock in key order, then move: the old owners are known for the audit rows, and two transfers of the same
        # members cannot deadlock.
        cursor.execute(
            f"SELECT {kind.pk}, owner_client_id FROM {kind.table} WHERE {where} "  # noqa: S608 (constants only)
            f"ORDER BY {kind.pk} FOR UPDATE",
            params,
        )
        rows = cursor.fetchall()
        if member_ids:
            unknown = sorted(set(member_ids) - {member_id for member_id, _ in rows})
            if unknown:
                raise NotFound(f"unknown {kind.label}: {', '.join(unknown[:5])}")
        moved = [Transfer(member_id, owner) for member_id, owner in rows if owner != to_client_id]
        cursor.execute(
            f"UPDATE {kind.table} SET owner_client_id = %(to)s WHERE {kind.pk} = ANY(%(moved)s)",  # noqa: S608
            {"to": to_client_id, "moved": [transfer.member_id for transfer in moved]},
        )
        audit_record_many(
            AuditEntry(
                event_type=kind.event("transferred"), action="transfer",
                actor_type=ActorType.USER if actor_user_id else ActorType.SYSTEM, actor_user_id=actor_user_id,
                target_type=kind.target_type, target_id=transfer.member_id,
                metadata={"from_client_id": transfer.from_client_id, "to_client_id": to_client_id},
            )
            for transfer in moved
        )
    return moved
