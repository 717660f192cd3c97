"""Signing in with an identity provider, and the links between users and providers.

One service for both doors: the REST API (which gets our user token) and the admin login page (which gets a
Django session, and only for active staff). The flow is finished by accounts.oidc, which checks the ID token
(signature, issuer, audience, nonce, times) before any account is looked at.

A user is found by (provider, subject) first. A first sign-in needs an email the provider says is verified: it
links an existing account with that email (an unverified one would let whoever controls an account at a provider
that does not check emails take over ours), or, through the API door, creates one (with no password: NULL
password_hash). Creating an account under an unverified email is refused too: it would squat the address, and
its rightful owner's later verified sign-in would be linked into an account a stranger also holds. The admin
door creates nobody.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Literal

from django.conf import settings
from django.db import IntegrityError, transaction
from django.db.models import QuerySet
from django.db.models.functions import Now
from django.http import HttpRequest

from accounts.models import OAuthProvider, User
from accounts.oidc import ProviderIdentity, oidc_finish
from accounts.provider_tokens import provider_token_encrypt, provider_token_rotate
from accounts.services.users import LOGIN_EVENT, LOGIN_TARGET_TYPE, email_hash, normalize_email, user_scopes
from accounts.tokens import IssuedToken, token_issue
from audit.models import ActorType, AuditResult
from audit.services import audit_record
from darktower.errors import Conflict, DomainError, NotFound, PermissionDenied, Unauthenticated

Door = Literal["api", "admin"]
OIDC_FAILURE_TARGET_TYPE = "oidc_provider"


@dataclass(frozen=True)
class OidcSignIn:
    user: User
    created: bool  # a new account
    linked: bool  # a new link between the account and this provider's subject
    token: IssuedToken | None  # our user token (API door only)


def user_oidc_sign_in(
    *, request: HttpRequest, provider: str, door: Door, ip_address: str | None, user_agent: str | None,
    now: float | None = None,
) -> OidcSignIn:
    """Finish the provider's flow (the callback `request`, checked at `now`), then find, link or create the user,
    store the provider's tokens encrypted, record the login like a password login (last_login_at, a `user_login`
    audit row) and, for the API door, issue our user token; all in one transaction. A refusal writes nothing but
    its failure audit row; an unreachable provider writes nothing at all."""
    try:
        identity = oidc_finish(request, provider=provider, now=now)
    except (Unauthenticated, PermissionDenied) as exc:
        _audit_failure(provider, door, exc.code, ip_address, user_agent)
        raise
    try:
        with transaction.atomic():
            return _sign_in(identity=identity, door=door, ip_address=ip_address, user_agent=user_agent)
    except IntegrityError:
        # Two first sign-ins of one subject (or one email) at once: the loser's transaction is rolled back and
        # the other one's account stands; a retry finds it.
        _audit_failure(provider, door, "concurrent_first_sign_in", ip_address, user_agent)
        raise Conflict("Another sign-in for this account is in progress; retry.") from None
    except DomainError as exc:
        _audit_failure(provider, door, exc.code, ip_address, user_agent)
        raise


def _sign_in(*, identity: ProviderIdentity, door: Door, ip_address: str | None, user_agent: str | None) -> OidcSignIn:
    link = (
        OAuthProvider.objects.select_for_update(of=("self",)).select_related("user")
        .filter(provider=identity.provider, provider_user_id=identity.subject).first()
    )
    created = linked = False
    if link is not None:
        user = link.user
    else:
        email = normalize_email(identity.email) if identity.email else None
        if email is None:
            raise Unauthenticated("The sign-in provider did not give an email address.")
        existing = User.objects.filter(email=email).first()
        if not identity.email_verified:
            raise Unauthenticated(
                "The sign-in provider has not verified this email address; verify it there, then sign in again."
            )
        if existing is not None:
            user = existing
        elif door == "admin":
            raise PermissionDenied("No staff account matches this sign-in.")
        else:
            user = User(email=email, display_name=identity.name or email.split("@")[0], password=None)
            user.save(force_insert=True)
            created = True
        link = OAuthProvider(user=user, provider=identity.provider, provider_user_id=identity.subject)
        linked = True
    if not user.is_active:
        raise Unauthenticated("This account is disabled.")
    if door == "admin" and not user.is_staff:
        raise PermissionDenied("Only staff may sign in to the admin.")

    link.access_token_encrypted = provider_token_encrypt(identity.access_token)
    link.refresh_token_encrypted = provider_token_encrypt(identity.refresh_token)
    link.token_expires_at = identity.access_token_expires_at
    if linked:
        link.save(force_insert=True)
        audit_record(
            event_type="oauth_provider_linked", action="create", actor_type=ActorType.USER, actor_user_id=user.pk,
            target_type="oauth_provider", target_id=str(link.pk),
            metadata={"provider": identity.provider, "new_user": created}, ip_address=ip_address,
            user_agent=user_agent,
        )
    else:
        link.save(update_fields=["access_token_encrypted", "refresh_token_encrypted", "token_expires_at"])
    User.objects.filter(pk=user.pk).update(last_login=Now())
    audit_record(
        event_type=LOGIN_EVENT, action="login", actor_type=ActorType.USER, actor_user_id=user.pk,
        target_type=LOGIN_TARGET_TYPE, target_id=email_hash(user.email), ip_address=ip_address,
        user_agent=user_agent, metadata={"method": "oidc", "provider": identity.provider, "door": door},
    )
    token = None
    if door == "api":
        token = token_issue(
            subject=str(user.pk), audience=settings.JWT_API_AUDIENCE, scopes=sorted(user_scopes(user)),
            lifetime_seconds=settings.JWT_USER_TOKEN_LIFETIME_SECONDS,
        )
    return OidcSignIn(user=user, created=created, linked=linked, token=token)


def _audit_failure(provider: str, door: Door, reason: str, ip_address: str | None, user_agent: str | None) -> None:
    # Committed even though the sign-in fails: the per-address login limit counts these when Redis is down.
    audit_record(
        event_type=LOGIN_EVENT, action="login", actor_type=ActorType.USER, result=AuditResult.FAILURE,
        error_message=reason, target_type=OIDC_FAILURE_TARGET_TYPE, target_id=provider,
        ip_address=ip_address, user_agent=user_agent, metadata={"method": "oidc", "door": door},
    )


def oauth_providers_for_user(user_id: uuid.UUID) -> QuerySet[OAuthProvider]:
    return OAuthProvider.objects.filter(user_id=user_id).order_by("created_at").only(
        "id", "provider", "provider_user_id", "created_at", "user_id"
    )


def oauth_provider_unlink(*, user_id: uuid.UUID, link_id: int) -> None:
    """Remove one of the user's provider links, with its tokens, unless it is the last way in (no usable
    password and no other link)."""
    with transaction.atomic():
        # The user row is locked so that two unlinks at once cannot each see the other's link as the way left.
        user = User.objects.select_for_update().filter(pk=user_id).first()
        if user is None:
            raise NotFound("No such provider link.")
        links = list(OAuthProvider.objects.filter(user_id=user_id).values_list("id", "provider"))
        provider = next((name for pk, name in links if pk == link_id), None)
        if provider is None:
            raise NotFound("No such provider link.")
        if len(links) == 1 and not user.has_usable_password():
            raise Conflict("This is your only way to sign in: set a password or link another provider first.")
        OAuthProvider.objects.filter(pk=link_id, user_id=user_id).delete()
        audit_record(
            event_type="oauth_provider_unlinked", action="delete", actor_type=ActorType.USER, actor_user_id=user_id,
            target_type="oauth_provider", target_id=str(link_id), metadata={"provider": provider},
        )


def oauth_provider_tokens_reencrypt(*, batch_size: int = 500) -> int:
    """Rewrite every stored provider token under the first key of OIDC_TOKEN_ENCRYPTION_KEYS; returns how many
    rows were rewritten. Rows are taken in batches by primary key, each batch in its own transaction, and each
    row is written only if its ciphertext did not change meanwhile (a sign-in writes fresh ones)."""
    rewritten = 0
    last_pk = 0
    while True:
        with transaction.atomic():
            rows = list(
                OAuthProvider.objects.filter(pk__gt=last_pk).order_by("pk")
                .values_list("pk", "access_token_encrypted", "refresh_token_encrypted")[:batch_size]
            )
            for pk, access, refresh in rows:
                if access is None and refresh is None:
                    continue
                rewritten += OAuthProvider.objects.filter(
                    pk=pk, access_token_encrypted=access, refresh_token_encrypted=refresh,
                ).update(
                    access_token_encrypted=provider_token_rotate(access),
                    refresh_token_encrypted=provider_token_rotate(refresh),
                )
        if len(rows) < batch_size:
            return rewritten
        last_pk = rows[-1][0]
