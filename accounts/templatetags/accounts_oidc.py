"""The admin login page's "Sign in with <provider>" links."""

from __future__ import annotations

from django import template
from django.urls import reverse
from django.utils.http import urlencode

from accounts.oidc import oidc_providers

register = template.Library()


@register.simple_tag
def oidc_sign_in_links(next_url: str = "") -> list[dict[str, str]]:
    """One link per configured provider, to the admin door's start, carrying the page to return to."""
    query = f"?{urlencode({'next': next_url})}" if next_url else ""
    return [
        {"display_name": config.display_name, "url": reverse("admin-oidc-start", args=[config.name]) + query}
        for config in oidc_providers()
    ]
