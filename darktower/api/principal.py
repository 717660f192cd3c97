"""The authenticated caller of a REST request (`request.auth`), as the API plumbing sees it.

Who may be a principal, and how, is the accounts app's (accounts.api.authentication, named in
settings.API_AUTHENTICATION_CLASSES): this module knows only the shape the views and permissions read.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any


class Principal:
    """An authenticated caller. `identifier` names it in rate-limit keys and idempotency rows.

    Its user is given, or read on first use (`load_user`): a bearer token whose scopes need nothing but an active
    user names that user by id, and whether the user still exists and is active is decided when `user` is first
    read (the loader refuses with a 401 when not), or by a service that checks it in its own statement
    (ApiView.user_checked_by_handler). `user_unread` says which: the API view reads the user before every answer
    that did not come from such a service."""

    __slots__ = ("_load_user", "_user", "api_key_id", "claims", "kind", "scopes", "user_id")

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

    @property
    def user(self) -> Any:
        """The active user, read now if it was not yet (refused with a 401 when it is gone or inactive)."""
        if self._user is None:
            assert self._load_user is not None
            self._user = self._load_user()
        return self._user

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
