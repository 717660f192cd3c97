"""The authenticated caller of a REST request (`request.auth`), as the API plumbing sees it.

Who may be a principal, and how, is the accounts app's (accounts.api.authentication, named in
settings.API_AUTHENTICATION_CLASSES): this module knows only the shape the views and permissions read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Principal:
    """An authenticated caller. `identifier` names it in rate-limit keys and idempotency rows."""

    kind: str  # "user" (bearer token) or "api_key"
    user: Any  # the active user (settings.AUTH_USER_MODEL)
    scopes: frozenset[str]
    api_key_id: uuid.UUID | None = None
    claims: Any = None  # the bearer token's claims; None for an API key

    @property
    def identifier(self) -> str:
        if self.api_key_id is not None:
            return f"apikey:{self.api_key_id}"
        return f"user:{self.user.pk}"

    def __repr__(self) -> str:
        return f"<Principal {self.identifier}>"
