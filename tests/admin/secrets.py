"""Reading a secret the admin shows once: from the page itself, and never from a cookie."""

from __future__ import annotations

import re
from http.cookies import SimpleCookie

from django.contrib.messages.storage.cookie import CookieStorage
from django.http import HttpRequest

_SHOWN = re.compile(r'<code class="dt-secret"[^>]*>([^<]+)</code>')


def shown_secrets(response) -> list[str]:
    """The secrets on a shown-once page, in page order; asserts the page may not be stored by any cache."""
    assert response.status_code == 200, response.status_code
    assert "no-store" in response["Cache-Control"], response.get("Cache-Control")
    return _SHOWN.findall(response.content.decode())


def assert_not_in_cookies(response, secret: str) -> None:
    """Neither the Set-Cookie headers as sent nor the messages cookie decoded (it is signed, not encrypted:
    its payload is only compressed) carry the secret."""
    for morsel in response.cookies.values():
        assert secret not in morsel.OutputString()
        if morsel.key == CookieStorage.cookie_name and morsel.value:
            decoded = CookieStorage(HttpRequest())._decode(morsel.value)
            assert decoded is not None, "the messages cookie did not decode"
            assert all(secret not in str(message) for message in decoded)
    assert secret not in str(SimpleCookie(response.get("Set-Cookie", "")))
