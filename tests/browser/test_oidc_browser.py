"""Sign-in with OpenID Connect in a real headless Chromium, against the local provider (tests/peers/oidc.py) and
pytest-django's live server: a new user through the REST flow (start URL, the provider's login and consent pages,
our callback answering with a token), and a staff member through the admin login page's button."""

from __future__ import annotations

import json
from collections.abc import Iterator

import jwt
import pytest

from accounts.models import OAuthProvider, User
from tests.browser import test_browser
from tests.factories import make_user
from tests.peers.oidc import CLIENT_ID, CLIENT_SECRET, OidcPeer

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

# The admin browser tests' Chromium (Debian's, installed when missing) and page fixtures.
chromium_path = test_browser.chromium_path
chromium = test_browser.chromium
page = test_browser.page


@pytest.fixture
def peer(live_server, settings) -> Iterator[OidcPeer]:
    from accounts import oidc

    peer = OidcPeer(
        [f"{live_server.url}/api/v1/auth/oidc/peer/callback", f"{live_server.url}/login/oidc/peer/callback/"]
    )
    settings.OIDC_PROVIDERS = {"peer": {
        "issuer": peer.issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
        "scopes": "openid email profile", "display_name": "Test Peer",
    }}
    settings.RATE_LIMIT_LOGIN_PER_IP = 100_000
    oidc._clients.clear()
    yield peer
    oidc._clients.clear()
    peer.stop()


def _provider_pages(page, login: str) -> None:
    page.wait_for_selector("input[name=login]")
    page.fill("input[name=login]", login)
    page.fill("input[name=password]", "any")
    page.click("button[type=submit]")
    page.wait_for_selector("input[name=prompt][value=consent]", state="attached")
    page.click("button[type=submit]")


def test_a_new_user_signs_in_through_the_provider_with_the_rest_flow(page, live_server, peer):
    page.goto(f"{live_server.url}/api/v1/auth/oidc/peer/start")
    assert page.url.startswith(peer.issuer)
    _provider_pages(page, "browser-newcomer@example.test")
    page.wait_for_url(f"{live_server.url}/api/v1/auth/oidc/peer/callback?**")

    body = json.loads(page.locator("body").inner_text())
    test_browser._screenshot(page, "oidc_rest_callback")
    user = User.objects.get(email="browser-newcomer@example.test")
    assert body["token_type"] == "Bearer"
    assert jwt.decode(body["access_token"], options={"verify_signature": False})["sub"] == str(user.pk)
    assert OAuthProvider.objects.get(user=user).provider == "peer"


def test_staff_sign_in_to_the_admin_with_the_providers_button(page, live_server, peer):
    make_user(email="browser-operator@example.test", is_staff=True)

    page.goto(f"{live_server.url}/admin/login/")
    test_browser._screenshot(page, "oidc_admin_login")
    page.click("#dt-oidc a.button:has-text('Sign in with Test Peer')")
    _provider_pages(page, "browser-operator@example.test")
    page.wait_for_selector("#site-name")

    assert page.url == f"{live_server.url}/admin/"
    assert "browser-operator@example.test" in page.locator("#user-tools").inner_text().lower()
    test_browser._screenshot(page, "oidc_admin_signed_in")
