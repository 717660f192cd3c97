"""API keys: `dt_<prefix>_<secret>`, shown once, stored as a SHA-256 hash and a prefix.

The secret is 256 random bits, so a fast hash is enough (nothing to brute-force) and lets authentication
find the key in one lookup through the unique index on key_hash.
"""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import BooleanField, ExpressionWrapper, Q, QuerySet
from django.db.models.functions import Now
from django.utils import timezone

from accounts.models import ApiKey, User
from accounts.services.users import user_scopes
from audit.models import ActorType
from audit.services import audit_record
from darktower.errors import Conflict, InvalidInput, NotFound, Unauthenticated

KEY_SCHEME = "dt"
PREFIX_BYTES = 4  # 8 hex characters: enough to tell a user's keys apart, far too few to guess a key
SECRET_BYTES = 32
LAST_USED_RESOLUTION = timedelta(minutes=1)
MAX_KEY_LENGTH = 128


@dataclass(frozen=True)
class CreatedApiKey:
    api_key: ApiKey
    raw_key: str = field(repr=False)  # returned to the caller once, never stored or logged


def api_key_hash(raw_key: str) -> str:
    return hashlib.sha256(raw_key.encode()).hexdigest()


def api_key_check(*, user: User, scopes: Iterable[str], expires_at: datetime | None = None) -> list[str]:
    """The rules a new key of `user` must meet, whichever door asks (api_key_create checks them again when it
    creates the key, under a lock; the admin's add form calls this to show them as form errors): at least one
    scope, only scopes the user has now, an expiry in the future (InvalidInput), and fewer active keys than
    API_KEYS_MAX_ACTIVE_PER_USER (Conflict: the request is fine, the user's keys are what stands in the way,
    and revoking one resolves it). Returns the scopes, sorted."""
    requested = sorted(set(scopes))
    if not requested:
        raise InvalidInput("An API key needs at least one scope.", fields={"scopes": ["Give at least one scope."]})
    allowed = user_scopes(user)
    beyond = [scope for scope in requested if scope not in allowed]
    if beyond:
        raise InvalidInput(
            "An API key may only carry scopes its user has.",
            fields={"scopes": [f"Not one of the user's scopes: {', '.join(beyond)}."]},
        )
    if expires_at is not None and expires_at <= timezone.now():
        raise InvalidInput("expires_at must be in the future.", fields={"expires_at": ["Must be in the future."]})
    limit = settings.API_KEYS_MAX_ACTIVE_PER_USER
    active = _active_keys(user.pk).count()
    if active >= limit:
        raise Conflict(f"At most {limit} active API keys per user, and this one holds {active}: revoke one first.")
    return requested


def _active_keys(user_id: uuid.UUID) -> QuerySet[ApiKey]:
    """Not revoked and not expired by the database's clock."""
    return ApiKey.objects.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=Now()), user_id=user_id, is_active=True
    )


def api_key_create(
    *,
    user: User,
    name: str,
    scopes: Iterable[str],
    expires_at: datetime | None = None,
    actor_user_id: uuid.UUID | None = None,
) -> CreatedApiKey:
    """A new key for `user` that meets `api_key_check`. The audit row names `actor_user_id` (an operator
    creating it in the admin), by default the owner (the REST API: users create their own keys)."""
    prefix = f"{KEY_SCHEME}_{secrets.token_hex(PREFIX_BYTES)}"
    raw_key = f"{prefix}_{secrets.token_urlsafe(SECRET_BYTES)}"
    with transaction.atomic():
        # One creation at a time per user, so that two concurrent requests cannot both take the last place
        # under the cap. FOR NO KEY UPDATE: rows inserted elsewhere that reference the user (which take FOR KEY
        # SHARE on it) are not held up.
        list(User.objects.select_for_update(no_key=True).filter(pk=user.pk).values_list("pk", flat=True))
        requested = api_key_check(user=user, scopes=scopes, expires_at=expires_at)
        api_key = ApiKey.objects.create(
            user=user, key_hash=api_key_hash(raw_key), key_prefix=prefix, name=name, scopes=requested,
            expires_at=expires_at,
        )
        audit_record(
            event_type="api_key_created", action="create", actor_type=ActorType.USER,
            actor_user_id=actor_user_id or user.pk, target_type="api_key", target_id=str(api_key.pk),
            metadata={
                "key_prefix": prefix, "scopes": requested, "expires_at": expires_at and expires_at.isoformat(),
                "owner_user_id": str(user.pk),
            },
        )
    return CreatedApiKey(api_key=api_key, raw_key=raw_key)


def api_key_revoke(
    *, key_id: uuid.UUID, actor_user_id: uuid.UUID, owner_user_id: uuid.UUID | None = None
) -> None:
    """Deactivate a key of `owner_user_id`, by default the actor's own (the REST API: users revoke their own
    keys; an operator in the admin passes the key's owner). Revoking a revoked key is a no-op (DELETE is
    idempotent); a key of somebody else is NotFound, so key ids cannot be probed. The audit row names the actor."""
    owner = owner_user_id or actor_user_id
    with transaction.atomic():
        revoked = ApiKey.objects.filter(pk=key_id, user_id=owner, is_active=True).update(is_active=False)
        if not revoked:
            if not ApiKey.objects.filter(pk=key_id, user_id=owner).exists():
                raise NotFound("No such API key.")
            return
        audit_record(
            event_type="api_key_revoked", action="revoke", actor_type=ActorType.USER, actor_user_id=actor_user_id,
            target_type="api_key", target_id=str(key_id), metadata={"owner_user_id": str(owner)},
        )


def api_key_authenticate(raw_key: str) -> ApiKey:
    """The active, unexpired key (with its user) for a presented key, or Unauthenticated.

    One SELECT through the unique index on key_hash; the database's clock judges expiry and whether
    last_used_at is older than a minute. Only then is last_used_at written, by a conditional UPDATE, so a
    busy key costs one write a minute and two racing requests write once.
    """
    if len(raw_key) > MAX_KEY_LENGTH or raw_key.count("_") < 2 or not raw_key.startswith(f"{KEY_SCHEME}_"):
        raise Unauthenticated("Invalid API key.")
    stale_use = Q(last_used_at__isnull=True) | Q(last_used_at__lt=Now() - LAST_USED_RESOLUTION)
    api_key = (
        ApiKey.objects.select_related("user")
        .annotate(
            expired=ExpressionWrapper(Q(expires_at__lte=Now()), output_field=BooleanField()),
            stale_use=ExpressionWrapper(stale_use, output_field=BooleanField()),
        )
        .filter(key_hash=api_key_hash(raw_key))
        .first()
    )
    if api_key is None or not api_key.is_active or api_key.expired or not api_key.user.is_active:
        raise Unauthenticated("Invalid, expired or revoked API key.")
    if api_key.stale_use:
        ApiKey.objects.filter(stale_use, pk=api_key.pk).update(last_used_at=Now())
    return api_key


def api_keys_for_user(user_id: uuid.UUID) -> QuerySet[ApiKey]:
    """The user's keys for listing, newest first; `usable` is active and not expired by the database's clock."""
    return (
        ApiKey.objects.filter(user_id=user_id)
        .annotate(
            usable=ExpressionWrapper(
                Q(is_active=True) & (Q(expires_at__isnull=True) | Q(expires_at__gt=Now())),
                output_field=BooleanField(),
            )
        )
        .order_by("-created_at", "-key_id")
    )
