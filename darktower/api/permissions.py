"""Scope checks: each view names the scope every method requires (`required_scopes`); a missing credential
is 401, a credential without the scope is 403."""

from __future__ import annotations

from typing import Any

from rest_framework import exceptions
from rest_framework.permissions import BasePermission
from rest_framework.request import Request

from darktower.api.principal import Principal


class ScopePermission(BasePermission):
    """`view.required_scopes`: {"GET": "meetings:read", ...}; a method mapped to None needs a caller but no
    scope; a method not listed is refused (a forgotten entry fails closed). `view.principal_kinds` limits
    which credentials a view takes (managing API keys needs a user token, not a key)."""

    def has_permission(self, request: Request, view: Any) -> bool:
        if getattr(view, "public", False) or request.method == "OPTIONS":
            return True
        assert request.method is not None  # Django's handler sets it from the request line
        if not hasattr(view, request.method.lower()):
            return True  # no handler: the view answers 405, which tells the caller more than a 403 would
        principal = request.auth
        if not isinstance(principal, Principal):
            raise exceptions.NotAuthenticated("Authentication required: send a bearer token or an API key.")
        kinds = getattr(view, "principal_kinds", None)
        if kinds is not None and principal.kind not in kinds:
            raise exceptions.PermissionDenied("This endpoint needs a user access token, not an API key.")
        required: dict[str, str | None] = getattr(view, "required_scopes", {})
        method = "GET" if request.method == "HEAD" else request.method
        if method not in required:
            raise exceptions.PermissionDenied("No scope grants this method.")
        scope = required[method]
        if scope is not None and scope not in principal.scopes:
            raise exceptions.PermissionDenied(f"Missing scope {scope}.")
        return True
