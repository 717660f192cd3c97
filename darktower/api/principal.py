"""The authenticated caller of a REST request (`request.auth`), as the API plumbing sees it.

Who may be a principal, and how, is the accounts app's (accounts.api.authentication, named in
settings.API_AUTHENTICATION_CLASSES): this module knows only the shape the views and permissions read.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any, Protocol


class PendingRevocation(Protocol):
    """A credential's revocation lookup left to the API view, to be made in the round trip that counts the
    request's rate limits (darktower.api.ratelimit: `unless_exists`)."""

    key: str  # the Redis key whose existence means revoked

    def settle(self, revoked: bool | None) -> None:
        """What the lookup found (None: Redis unreachable); raises AuthenticationFailed when revoked."""

    def check(self) -> None:
        """The lookup alone, then settle: for an answer given without counting the limits."""


class Principal:
    """An authenticated caller. `identifier` names it in rate-limit keys and idempotency rows.

    Its user is given, or read on first use (`load_user`): a bearer token whose scopes need nothing but an active
    user names that user by id, and whether the user still exists and is active is decided when `user` is first
    read (the loader refuses with a 401 when not), or by a service that checks it in its own statement
    (ApiView.user_checked_by_handler). `user_unread` says which: the API view reads the user before every answer
    that did not come from such a service."""

    __slots__ = ("_load_user", "_user", "api_key_id", "claims", "kind", "revocation", "scopes", "user_id")

    def __init__(
        self,
        *,
        kind: str,  # "user" (bearer token) or "api_key"
        scopes: frozenset[str],
        user: Any = None,  # the active user (settings.AUTH_USER_MODEL)
        user_id: uuid.UUID | None = None,
        load_user: Callable[[], Any] | None = None,
        api_key_id: uuid.UUID | None = None,
        claims: Any = None,  # the bearer token's claims; None for an API key
        revocation: PendingRevocation | None = None,
    ) -> None:
        if user is not None:
            user_id = user.pk
        if user_id is None or (user is None and load_user is None):
            raise ValueError("a principal needs its user, or the user's id and a loader")
        self.kind = kind
        self.scopes = scopes
        self.user_id: uuid.UUID = user_id
        self.api_key_id = api_key_id
        self.claims = claims
        self._user = user
        self._load_user = load_user
        # Until settled, the credential is not known to be unrevoked: ApiView.initial settles it before any
        # handler runs (settle_revocation), ApiView.handle_exception before any error answer.
        self.revocation = revocation

    @property
    def user(self) -> Any:
        """The active user, read now if it was not yet (refused with a 401 when it is gone or inactive)."""
        if self._user is None:
            assert self._load_user is not None
            self._user = self._load_user()
        return self._user

    def settle_revocation(self, revoked: bool | None) -> None:
        """Settle the pending revocation lookup with what it found (see PendingRevocation.settle)."""
        pending, self.revocation = self.revocation, None
        if pending is not None:
            pending.settle(revoked)

    def check_revocation(self) -> None:
        """Settle the pending revocation lookup, if any, by making it alone."""
        pending, self.revocation = self.revocation, None
        if pending is not None:
            pending.check()

    @property
    def user_unread(self) -> bool:
        return self._user is None

    @property
    def identifier(self) -> str:
        if self.api_key_id is not None:
            return f"apikey:{self.api_key_id}"
        return f"user:{self.user_id}"

    def __repr__(self) -> str:
        return f"<Principal {self.identifier}>"
