"""Service credentials (OAuth 2.0 clients of our meeting controllers and media handlers) and the service
tokens issued to them by the client-credentials grant (RFC 6749 section 4.4).

Secrets are 256 random bits, shown once, and stored as their SHA-256 hex digest, compared in constant time.
Why not one of Django's password hashers: they exist to slow down guessing of low-entropy passwords; a
256-bit random secret cannot be guessed whatever the hash, so PBKDF2 would only add ~0.2 s of CPU to every
token request here and turn the token endpoint into a cheap way to burn our CPU. Why not keyed (HMAC with a
server-side pepper): the pepper would have to be SECRET_KEY or another managed secret, and rotating it would
silently invalidate every credential of the fleet, for no gain against an attacker who cannot guess 256 bits.
(API keys make the same choice, see accounts.services.api_keys.)
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TypedDict

from django.conf import settings
from django.db import transaction
from django.db.models.functions import Now
from django.utils import timezone

from accounts.blacklist import blacklist_add
from accounts.models import ServiceCredential
from accounts.signing import signing_key_active
from accounts.tokens import IssuedToken, token_issue
from audit.models import ActorType, AuditLog, AuditResult
from audit.services import audit_record, database_now
from darktower.errors import Conflict, InvalidInput, NotFound, Unauthenticated

# Scopes a service credential may hold; the gRPC service guard requires mc:register for
# GlobalControllerService and mh:register for MediaHandlerRegistryService.
SERVICE_SCOPES = frozenset({"mc:register", "mh:register"})

# Dark Tower's own services name each other by service_type and authorise calls by their own scopes. A token
# whose scopes make it one kind of member carries that service_type, Dark Tower's scopes for that kind beside
# ours, and no audience (their validator refuses any), so an original MC or MH presents it to us and to its peers.
MC_SERVICE_TYPE = "meeting-controller"
MH_SERVICE_TYPE = "media-handler"
SERVICE_TYPE_OF_SCOPE = {"mc:register": MC_SERVICE_TYPE, "mh:register": MH_SERVICE_TYPE}
ORIGINAL_SCOPES = {
    MC_SERVICE_TYPE: ("service.write.gc", "service.write.mh"),
    MH_SERVICE_TYPE: ("service.write.gc", "service.write.mc"),
}
# The scope Dark Tower's services need to call the GC, with the service_type of the GC service called.
ORIGINAL_GC_SCOPE = "service.write.gc"

CLIENT_ID_PREFIX = "svc_"
SECRET_PREFIX = "dtsec_"
_CLIENT_ID_BYTES = 12
_SECRET_BYTES = 32
# Ours are svc_ and 24 hex digits; an operator may choose one (a fleet configured with a fixed client id), within
# this pattern, which ours match too.
CLIENT_ID_PATTERN = re.compile(r"[a-z0-9][a-z0-9._-]{2,63}")
# Longer input is refused before hashing: nothing we issue comes close.
MAX_SECRET_LENGTH = 256
NAME_MAX_LENGTH = 255
# The longest lifetime settings allow (JWT_SERVICE_TOKEN_LIFETIME_SECONDS <= 86400): a revocation looks back
# this far for live tokens, so lowering the setting never hides tokens issued under the old one.
_LONGEST_SERVICE_TOKEN = timedelta(days=1)
# Compared against when the client is unknown, so a miss costs the same hash and compare as a hit.
_NO_SUCH_SECRET_HASH = hashlib.sha256(b"no such client").hexdigest()


class InvalidClient(Unauthenticated):
    """RFC 6749 section 5.2 invalid_client: unknown client, wrong secret, revoked credential."""

    code = "invalid_client"


class InvalidScope(InvalidInput):
    """RFC 6749 section 5.2 invalid_scope: a scope that is unknown or not granted to this client."""

    code = "invalid_scope"


@dataclass(frozen=True)
class CreatedServiceCredential:
    credential: ServiceCredential
    client_secret: str = field(repr=False)  # returned once, never stored or logged


def secret_hash(client_secret: str) -> str:
    return hashlib.sha256(client_secret.encode()).hexdigest()


def _validate_scopes(scopes: Iterable[str]) -> list[str]:
    requested = sorted({scope.strip() for scope in scopes if scope.strip()})
    if not requested:
        raise InvalidInput(
            "A service credential needs at least one scope.", fields={"scopes": ["Give at least one scope."]}
        )
    unknown = [scope for scope in requested if scope not in SERVICE_SCOPES]
    if unknown:
        known = ", ".join(sorted(SERVICE_SCOPES))
        raise InvalidInput(
            "Unknown service scope.", fields={"scopes": [f"Not a service scope: {', '.join(unknown)}. Known: {known}."]}
        )
    return requested


class _Actor(TypedDict):
    actor_type: str
    actor_user_id: uuid.UUID | None


def _actor(actor_user_id: uuid.UUID | None) -> _Actor:
    return {"actor_type": ActorType.USER if actor_user_id else ActorType.SYSTEM, "actor_user_id": actor_user_id}


def service_type_of(scopes: Iterable[str]) -> str | None:
    """The service_type a token with `scopes` carries: that of its one kind of member, None for both or none."""
    kinds = {SERVICE_TYPE_OF_SCOPE[scope] for scope in scopes if scope in SERVICE_TYPE_OF_SCOPE}
    return kinds.pop() if len(kinds) == 1 else None


def service_credential_create(
    *, name: str, scopes: Iterable[str], client_id: str | None = None, actor_user_id: uuid.UUID | None = None
) -> CreatedServiceCredential:
    """A new active credential allowed `scopes` (all from SERVICE_SCOPES); its secret is returned once.
    `client_id`: the operator's choice (CLIENT_ID_PATTERN, unique: Conflict when taken), else a random one."""
    name = (name or "").strip()
    if not name or len(name) > NAME_MAX_LENGTH:
        raise InvalidInput(
            "A service credential needs a name.", fields={"name": [f"1 to {NAME_MAX_LENGTH} characters."]}
        )
    allowed = _validate_scopes(scopes)
    if client_id is not None and not CLIENT_ID_PATTERN.fullmatch(client_id):
        raise InvalidInput("Invalid client id.", fields={"client_id": [
            "3 to 64 characters: lower-case letters, digits, '.', '_' or '-', starting with a letter or digit."
        ]})
    client_id = client_id or f"{CLIENT_ID_PREFIX}{secrets.token_hex(_CLIENT_ID_BYTES)}"
    client_secret = f"{SECRET_PREFIX}{secrets.token_urlsafe(_SECRET_BYTES)}"
    with transaction.atomic():
        if ServiceCredential.objects.filter(client_id=client_id).exists():
            raise Conflict(f"A service credential with client id {client_id} exists already.")
        credential = ServiceCredential.objects.create(
            client_id=client_id, name=name, secret_hash=secret_hash(client_secret), scopes=allowed
        )
        audit_record(
            event_type="service_credential_created", action="create", **_actor(actor_user_id),
            target_type="service_credential", target_id=client_id, metadata={"name": name, "scopes": allowed},
        )
    return CreatedServiceCredential(credential=credential, client_secret=client_secret)


def service_credential_rotate_secret(
    *, client_id: str, actor_user_id: uuid.UUID | None = None
) -> CreatedServiceCredential:
    """A new secret for an active credential, returned once; the old secret is refused from this commit on.

    Compare-and-set on is_active: a revocation that commits first wins (Conflict), and a rotation never revives
    a revoked credential. Tokens already issued stay valid until they expire (at most
    JWT_SERVICE_TOKEN_LIFETIME_SECONDS), so a fleet can be given the new secret without an outage; to cut those
    off too, revoke the credential instead. NotFound for an unknown client id.
    """
    client_secret = f"{SECRET_PREFIX}{secrets.token_urlsafe(_SECRET_BYTES)}"
    with transaction.atomic():
        rotated = ServiceCredential.objects.filter(client_id=client_id, is_active=True).update(
            secret_hash=secret_hash(client_secret)
        )
        if not rotated:
            if not ServiceCredential.objects.filter(client_id=client_id).exists():
                raise NotFound("No such service credential.")
            raise Conflict("The service credential is revoked; create a new one instead.")
        credential = ServiceCredential.objects.get(client_id=client_id)
        audit_record(
            event_type="service_credential_secret_rotated", action="rotate_secret", **_actor(actor_user_id),
            target_type="service_credential", target_id=client_id,
        )
    return CreatedServiceCredential(credential=credential, client_secret=client_secret)


@dataclass(frozen=True)
class CredentialRevocation:
    newly_revoked: bool  # False: it was revoked already
    tokens_revoked: int  # unexpired tokens of the credential put on the blacklist


def _live_tokens(client_id: str) -> list[tuple[str, datetime]]:
    """(jti, expires_at) of the credential's tokens that have not expired, from the audit rows that
    service_token_issue writes in the same transaction as each token (idx_audit_target finds them)."""
    now = database_now()
    rows = AuditLog.objects.filter(
        target_type="service_credential", target_id=client_id, event_type="service_token_issued",
        created_at__gte=now - _LONGEST_SERVICE_TOKEN,
    ).values_list("metadata", flat=True)
    live = []
    for metadata in rows:
        assert metadata is not None  # service_token_issue writes each such row with the token's jti and expiry
        expires_at = datetime.fromisoformat(metadata["expires_at"])
        if expires_at > now:
            live.append((metadata["jti"], expires_at))
    return live


def service_credential_revoke(*, client_id: str, actor_user_id: uuid.UUID | None = None) -> CredentialRevocation:
    """Deactivate a credential and blacklist its unexpired tokens: from now on neither a new token nor an
    old one gets the service in. NotFound for an unknown client id.

    A concurrent token request either committed first (its audit row is then seen here and its token
    blacklisted) or sees the credential inactive (service_token_issue's compare-and-set). Blacklisting
    happens after the commit: if Redis fails, the credential is revoked all the same and the error
    propagates; revoking again (idempotent) retries the blacklist.
    """
    with transaction.atomic():
        newly_revoked = bool(
            ServiceCredential.objects.filter(client_id=client_id, is_active=True).update(is_active=False)
        )
        if not newly_revoked and not ServiceCredential.objects.filter(client_id=client_id).exists():
            raise NotFound("No such service credential.")
        live = _live_tokens(client_id)
        if newly_revoked:
            audit_record(
                event_type="service_credential_revoked", action="revoke", **_actor(actor_user_id),
                target_type="service_credential", target_id=client_id, metadata={"tokens_revoked": len(live)},
            )
    now = timezone.now()
    for jti, expires_at in live:
        ttl = int((expires_at - now).total_seconds()) + settings.JWT_CLOCK_SKEW_SECONDS + 1
        blacklist_add(jti=jti, ttl_seconds=ttl, reason="service credential revoked")
    return CredentialRevocation(newly_revoked=newly_revoked, tokens_revoked=len(live))


def _granted_scopes(requested: str | None, allowed: Iterable[str]) -> list[str]:
    allowed_set = set(allowed)
    if requested is None or not requested.strip():
        return sorted(allowed_set)
    wanted = set(requested.split())
    if not wanted <= allowed_set:
        raise InvalidScope("The requested scope is unknown or not granted to this client.")
    return sorted(wanted)


def _audit_refusal(*, client_id: str, reason: str, ip_address: str | None) -> None:
    audit_record(
        event_type="service_token_refused", action="issue", actor_type=ActorType.SERVICE,
        result=AuditResult.FAILURE, target_type="service_credential", target_id=client_id[:255],
        error_message=reason, ip_address=ip_address,
    )


def service_token_issue(
    *, client_id: str, client_secret: str, scope: str | None, ip_address: str | None = None
) -> IssuedToken:
    """A service token for a client authenticated by its secret.

    `scope` is the space-delimited request (RFC 6749 section 3.3): it must be a subset of the
    credential's scopes (InvalidScope otherwise); absent or empty, every allowed scope is granted. A token
    granted one kind of member's scope (mc:register or mh:register) is that kind's, as Dark Tower's services
    expect it: service_type, their scopes for it beside ours, no audience; one granted both carries the service
    audience (JWT_SERVICE_AUDIENCE) instead.
    Unknown client, wrong secret and revoked credential are one InvalidClient, so a caller cannot tell
    them apart. Refusals of well-formed client ids are audited too (they are how a leaked or guessed id
    shows up); malformed ids are refused without a query.
    """
    if not isinstance(client_id, str) or not CLIENT_ID_PATTERN.fullmatch(client_id):
        raise InvalidClient("Client authentication failed.")
    presented = secret_hash(client_secret) if 0 < len(client_secret) <= MAX_SECRET_LENGTH else ""
    credential = (
        ServiceCredential.objects.filter(client_id=client_id).only("client_id", "secret_hash", "scopes", "is_active")
        .first()
    )
    stored = credential.secret_hash if credential is not None else _NO_SUCH_SECRET_HASH
    secret_ok = hmac.compare_digest(presented.encode(), stored.encode())
    if credential is None or not secret_ok or not credential.is_active:
        reason = "unknown client" if credential is None else ("bad secret" if not secret_ok else "revoked")
        _audit_refusal(client_id=client_id, reason=reason, ip_address=ip_address)
        raise InvalidClient("Client authentication failed.")
    try:
        granted = _granted_scopes(scope, credential.scopes)
    except InvalidScope:
        _audit_refusal(client_id=client_id, reason="scope not allowed", ip_address=ip_address)
        raise
    # Outside the transaction: on a fresh database this creates and commits the first signing key, which
    # must not vanish with a rollback of ours while this process caches it.
    signing_key_active()
    with transaction.atomic():
        # Compare-and-set: a revocation that committed since the check above wins, and no token leaves.
        if not ServiceCredential.objects.filter(pk=credential.pk, is_active=True).update(last_used_at=Now()):
            raise InvalidClient("Client authentication failed.")
        service_type = service_type_of(granted)
        issued = token_issue(
            subject=client_id, audience=None if service_type else settings.JWT_SERVICE_AUDIENCE,
            scopes=[*granted, *ORIGINAL_SCOPES.get(service_type or "", ())],
            lifetime_seconds=settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS,
            extra_claims={"service_type": service_type} if service_type else None,
        )
        audit_record(
            event_type="service_token_issued", action="issue", actor_type=ActorType.SERVICE,
            target_type="service_credential", target_id=client_id, ip_address=ip_address,
            metadata={"jti": issued.jti, "scope": issued.scope, "expires_at": issued.expires_at.isoformat()},
        )
    return issued


# --- The GC's own token, for its calls to MCs -------------------------------------------------------------

# What an MC requires of the GC's AssignMeetingWithMh call (Dark Tower's MC auth layer): this scope, this
# service_type, and no `aud` claim.
GC_SERVICE_TYPE = "global-controller"
GC_TO_MC_SCOPE = "service.write.mc"
# Renewed this long before it expires, so that a token never expires in flight or on an MC whose clock is ahead.
_GC_TOKEN_RENEW_SECONDS = 60

_gc_token_lock = threading.Lock()
_gc_token: IssuedToken | None = None


def gc_service_token() -> str:
    """The token this GC presents to MCs: subject GC_ID, scope service.write.mc, service_type global-controller,
    no audience, GC_SERVICE_TOKEN_LIFETIME_SECONDS long, signed with the active key and reused by this process
    until it nears expiry. The GC is its own token issuer, so no credential or round trip is involved."""
    global _gc_token
    with _gc_token_lock:
        token = _gc_token
        if token is None or (token.expires_at - timezone.now()).total_seconds() < _GC_TOKEN_RENEW_SECONDS:
            token = _gc_token = token_issue(
                subject=settings.GC_ID, audience=None, scopes=[GC_TO_MC_SCOPE],
                lifetime_seconds=settings.GC_SERVICE_TOKEN_LIFETIME_SECONDS,
                extra_claims={"service_type": GC_SERVICE_TYPE},
            )
        return token.token


def gc_service_token_forget() -> None:
    """Drop the cached GC token (a signing key rotation or revocation, tests)."""
    global _gc_token
    with _gc_token_lock:
        _gc_token = None
