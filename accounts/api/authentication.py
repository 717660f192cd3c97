"""Who is calling: `Authorization: Bearer <user access token>` or `Authorization: ApiKey dt_<prefix>_<secret>`.

Both set `request.user` to the User and `request.auth` to a Principal carrying the scopes the request may
use: the token's (or the key's) scopes intersected with the user's current ones (accounts.services.users). A
bearer token's user may be read only when first used (BearerTokenAuthentication).
A header naming neither scheme is ignored (the request is anonymous); a header naming one with a bad
credential is a 401, never a fall-through to anonymous.

The API's views (darktower.api.views.ApiView) use the classes that settings.API_AUTHENTICATION_CLASSES names.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import cast

from django.conf import settings
from django.db import connection
from django.utils.functional import SimpleLazyObject
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.openapi import AutoSchema
from rest_framework import exceptions
from rest_framework.authentication import BaseAuthentication
from rest_framework.request import Request

from accounts.models import User
from accounts.services.api_keys import api_key_authenticate
from accounts.services.users import REGULAR_USER_SCOPES, user_scopes
from accounts.tokens import (
    TokenClaims,
    token_revocation_check,
    token_revocation_settle,
    token_verify_deferring_revocation,
)
from darktower.api.errors import WWW_AUTHENTICATE
from darktower.api.principal import Principal
from darktower.errors import Unauthenticated

BEARER = "bearer"
# The refusal of a token whose user is gone or inactive, wherever it is decided (here, or in a service's statement).
INACTIVE_USER = "Unknown or inactive user."
API_KEY = "apikey"


def _credentials(request: Request, scheme: str) -> str | None:
    header = request.META.get("HTTP_AUTHORIZATION", "")
    name, _, value = header.strip().partition(" ")
    if name.lower() != scheme:
        return None
    value = value.strip()
    if not value:
        raise exceptions.AuthenticationFailed("Empty credentials.")
    return value


# Every column but those that need a converter (metadata, JSON): those stay deferred, loaded if ever read.
_USER_FIELDS = [field for field in User._meta.concrete_fields if field.attname != "metadata"]
_USER_ATTNAMES = [field.attname for field in _USER_FIELDS]
_ACTIVE_USER_SQL = "SELECT {columns} FROM users WHERE user_id = %s AND is_active".format(  # noqa: S608 constants
    columns=", ".join(field.column for field in _USER_FIELDS)
)


def _user_id(subject: str) -> uuid.UUID | None:
    try:
        return uuid.UUID(subject)
    except ValueError:
        return None


def _active_user(user_id: uuid.UUID) -> User | None:
    """The active user a token names. A plain cursor and Model.from_db: many bearer requests make this read,
    and compiling it through the ORM (or Model.raw's column mapping) cost more CPU than the read itself."""
    with connection.cursor() as cursor:
        cursor.execute(_ACTIVE_USER_SQL, [user_id])
        row = cursor.fetchone()
    return None if row is None else User.from_db(connection.alias, _USER_ATTNAMES, row)


class _Revocation:
    """A bearer token's revocation lookup, left to the API view (darktower.api.principal.PendingRevocation)."""

    def __init__(self, claims: TokenClaims, key: str) -> None:
        self.claims = claims
        self.key = key

    def settle(self, revoked: bool | None) -> None:
        try:
            token_revocation_settle(self.claims, revoked=revoked)
        except Unauthenticated as exc:
            raise exceptions.AuthenticationFailed(exc.message) from None

    def check(self) -> None:
        try:
            token_revocation_check(self.claims)
        except Unauthenticated as exc:
            raise exceptions.AuthenticationFailed(exc.message) from None


def _user_loader(user_id: uuid.UUID) -> Callable[[], User]:
    def load() -> User:
        user = _active_user(user_id)
        if user is None:
            raise exceptions.AuthenticationFailed(INACTIVE_USER)
        return user

    return load


class BearerTokenAuthentication(BaseAuthentication):
    """A user access token. When the token asks only for scopes that an active user always has
    (REGULAR_USER_SCOPES: user_scopes needs nothing else of the user for them), its user is not read here: the
    Principal reads it on first use, refusing a user gone or inactive with the same 401 as here, and a view whose
    service checks the user in its own statement (ApiView.user_checked_by_handler) never reads it. A token that
    asks for a fleet scope reads its user at once, its staff flag and permissions deciding its scopes.

    A revocation lookup that needs Redis is left to the view too (Principal.revocation), which makes it in the
    round trip that counts the request's rate limits; a token that reads its user at once looks it up first."""

    def authenticate(self, request: Request) -> tuple[User, Principal] | None:
        raw = _credentials(request, BEARER)
        if raw is None:
            return None
        try:
            claims, revocation_key = token_verify_deferring_revocation(raw, audience=settings.JWT_API_AUDIENCE)
        except Unauthenticated as exc:
            raise exceptions.AuthenticationFailed(exc.message) from None
        revocation = None if revocation_key is None else _Revocation(claims, revocation_key)
        user_id = _user_id(claims.subject)
        if claims.scopes <= REGULAR_USER_SCOPES and user_id is not None:
            principal = Principal(kind="user", user_id=user_id, load_user=_user_loader(user_id),
                                  scopes=claims.scopes, claims=claims, revocation=revocation)
            return cast(User, SimpleLazyObject(lambda: principal.user)), principal
        if revocation is not None:
            revocation.check()
        if user_id is None:
            raise exceptions.AuthenticationFailed(INACTIVE_USER)
        user = _active_user(user_id)
        if user is None:
            raise exceptions.AuthenticationFailed(INACTIVE_USER)
        scopes = user_scopes(user, among=frozenset(claims.scopes))
        return user, Principal(kind="user", user=user, scopes=scopes, claims=claims)

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE


class ApiKeyAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[User, Principal] | None:
        raw = _credentials(request, API_KEY)
        if raw is None:
            return None
        try:
            api_key = api_key_authenticate(raw)
        except Unauthenticated as exc:
            raise exceptions.AuthenticationFailed(exc.message) from None
        scopes = user_scopes(api_key.user, among=frozenset(api_key.scopes))
        return api_key.user, Principal(kind="api_key", user=api_key.user, scopes=scopes, api_key_id=api_key.pk)

    def authenticate_header(self, request: Request) -> str:
        return WWW_AUTHENTICATE


class BearerTokenScheme(OpenApiAuthenticationExtension):
    target_class = BearerTokenAuthentication
    name = "bearerAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {
            "type": "http", "scheme": "bearer", "bearerFormat": "JWT",
            "description": "User access token from POST /api/v1/auth/login (EdDSA, audience darktower-api).",
        }


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = ApiKeyAuthentication
    name = "apiKeyAuth"

    def get_security_definition(self, auto_schema: AutoSchema) -> dict[str, str]:
        return {
            "type": "apiKey", "in": "header", "name": "Authorization",
            "description": "`ApiKey dt_<prefix>_<secret>`, from POST /api/v1/api-keys.",
        }
