"""A user's personal data: export it as one JSON document, or erase it. One service per use case, whichever door
asks (REST for the user, the admin and a command for operators).

Each app says what it holds of a user through darktower.registry (from its AppConfig.ready()): the sections of
the export and the steps of the erasure. This module owns the profile, the account's own rows and the order:
the apps' steps first (they still find the user's rows by user id), then the account itself.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.contrib.admin.models import LogEntry
from django.contrib.contenttypes.models import ContentType
from django.core.serializers.json import DjangoJSONEncoder
from django.db import transaction
from django.utils import timezone

from accounts.models import ApiKey, OAuthProvider, User
from accounts.services.users import normalize_email
from audit.models import ActorType
from audit.services import audit_record
from darktower.errors import NotFound, PermissionDenied
from darktower.registry import personal_data_erasers, personal_data_sections

EXPORT_FORMAT = "darktower-personal-data/1"
ROWS_PER_FETCH = 500
# The document leaves in pieces of about this many characters: a few rows' worth per write, never the whole.
CHUNK_CHARS = 64 * 1024

PROFILE_FIELDS = (
    "user_id", "email", "display_name", "is_active", "is_staff", "is_superuser", "created_at", "updated_at",
    "last_login", "metadata",
)
# A linked provider without its tokens (encrypted or not, they are credentials, not the user's data).
OAUTH_PROVIDER_FIELDS = ("provider", "provider_user_id", "token_expires_at", "created_at", "updated_at")
# An API key without its hash.
API_KEY_FIELDS = (
    "key_id", "key_prefix", "name", "scopes", "is_active", "last_used_at", "expires_at", "created_at", "updated_at",
)

# Doors, as the audit rows name them.
VIA_API = "api"
VIA_ADMIN = "admin"
VIA_COMMAND = "command"


def user_id_by_email(email: str) -> uuid.UUID | None:
    """The user an operator names by email (the commands' argument), or None."""
    return User.objects.filter(email=normalize_email(email)).values_list("user_id", flat=True).first()


# --- export ----------------------------------------------------------------------------------------------------


def oauth_providers_of_user(*, user_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    rows = OAuthProvider.objects.filter(user_id=user_id).order_by("created_at", "id").values(*OAUTH_PROVIDER_FIELDS)
    return rows.iterator(chunk_size=ROWS_PER_FETCH)


def api_keys_of_user(*, user_id: uuid.UUID) -> Iterator[dict[str, Any]]:
    rows = ApiKey.objects.filter(user_id=user_id).order_by("created_at", "key_id").values(*API_KEY_FIELDS)
    return rows.iterator(chunk_size=ROWS_PER_FETCH)


def user_export(*, user_id: uuid.UUID, actor_user_id: uuid.UUID | None, via: str) -> Iterator[str]:
    """The user's personal data as one JSON document, in pieces: the profile, then every registered section (a
    list each) in order. NotFound for an unknown user, raised before the first piece.

    The export is audited at once, in its own transaction (who asked, through which door; nothing of the data).
    The pieces are then read section by section through server-side cursors, ROWS_PER_FETCH rows at a time,
    inside one transaction that the iterator holds open until it is exhausted or closed: a user with a million
    rows costs a few pieces' worth of memory, not the document's."""
    with transaction.atomic():
        profile = User.objects.filter(pk=user_id).values(*PROFILE_FIELDS).first()
        if profile is None:
            raise NotFound("No such user.")
        audit_record(
            event_type="user_data_exported", action="export",
            actor_type=ActorType.USER if actor_user_id else ActorType.SYSTEM, actor_user_id=actor_user_id,
            target_type="user", target_id=str(user_id), metadata={"via": via},
        )
    return _document(user_id, profile)


def _document(user_id: uuid.UUID, profile: dict[str, Any]) -> Iterator[str]:
    encoder = DjangoJSONEncoder()
    head = {"format": EXPORT_FORMAT, "exported_at": timezone.now(), "profile": profile}
    pending = [encoder.encode(head)[:-1]]  # the object stays open for the sections
    size = len(pending[0])
    # Named (server-side) cursors live inside a transaction.
    with transaction.atomic():
        for section in personal_data_sections():
            pending.append(f", {json.dumps(section.name)}: [")
            separator = ""
            for row in section.rows(user_id=user_id):
                piece = separator + encoder.encode(row)
                separator = ", "
                pending.append(piece)
                size += len(piece)
                if size >= CHUNK_CHARS:
                    yield "".join(pending)
                    pending, size = [], 0
            pending.append("]")
    pending.append("}\n")
    yield "".join(pending)


# --- erasure ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class UserErasure:
    erased: bool  # False: no such user (already erased, or never was): nothing was done
    counts: dict[str, int] = field(default_factory=dict)


def recent_authentication_check(
    *, user: User, password: str | None, token_issued_at: datetime, now: datetime
) -> None:
    """A user erasing themselves proves they are at the keyboard: their password, or a token issued within
    ERASURE_REAUTHENTICATION_SECONDS (what a user without a password, who signs in elsewhere, does: sign in
    again). A wrong password is refused even with a fresh token. PermissionDenied otherwise."""
    if password is not None:
        if not user.has_usable_password() or not user.check_password(password):
            raise PermissionDenied("The password is wrong.", fields={"password": ["Wrong password."]})
        return
    if now - token_issued_at > timedelta(seconds=settings.ERASURE_REAUTHENTICATION_SECONDS):
        raise PermissionDenied(
            "Erasing your account needs a recent sign-in: give your password, or sign in again and retry within "
            f"{settings.ERASURE_REAUTHENTICATION_SECONDS} seconds.",
        )


def user_erase(*, user_id: uuid.UUID, actor_user_id: uuid.UUID | None, via: str) -> UserErasure:
    """Erase a user, in one transaction: every app's registered step (meetings ended, recordings deleted,
    participations anonymised, idempotency rows deleted, ...), then the account: linked providers (and their
    tokens), API keys, the admin's log entries about the user, and the user row. The audit rows they acted in
    stay; the database's ON DELETE SET NULL clears their actor, and with it the address, user agent and login
    email hash they carry (accounts migration 0008). One `user_erased` audit row records the erasure: who asked
    (NULL when the user asked: they no longer exist), the door and the counts, nothing that names the user
    but their now meaningless id. A user that does not exist is a no-op (erased False, nothing written)."""
    with transaction.atomic():
        # FOR UPDATE: nothing new can reference the user (a join, a key) until the erasure commits.
        if User.objects.select_for_update().filter(pk=user_id).values_list("pk", flat=True).first() is None:
            return UserErasure(erased=False)
        counts: dict[str, int] = {}
        for step in personal_data_erasers():
            counts.update(step.run(user_id=user_id))
        counts["oauth_providers_deleted"], _ = OAuthProvider.objects.filter(user_id=user_id).delete()
        counts["api_keys_deleted"], _ = ApiKey.objects.filter(user_id=user_id).delete()
        LogEntry.objects.filter(
            content_type=ContentType.objects.get_for_model(User), object_id=str(user_id)
        ).delete()
        User.objects.filter(pk=user_id).delete()
        # The user's own request leaves no actor: the user no longer exists to be named.
        actor = None if actor_user_id == user_id else actor_user_id
        audit_record(
            event_type="user_erased", action="erase",
            actor_type=ActorType.SYSTEM if via == VIA_COMMAND else ActorType.USER, actor_user_id=actor,
            target_type="user", target_id=str(user_id), metadata={"via": via, "counts": counts},
        )
    return UserErasure(erased=True, counts=counts)
