"""A real OpenID provider on loopback (tests/peers/oidc.py) configured as the provider "peer", and the REST
clients (tests/fixtures/api.py)."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import urlsplit

import pytest
from rest_framework.test import APIClient

from accounts import oidc
from tests.fixtures.api import api, as_key, as_user, roomy_rate_limits  # noqa: F401 (fixtures)
from tests.peers.oidc import CLIENT_ID, CLIENT_SECRET, OidcPeer, peer_sign_in

TESTSERVER = "http://testserver"
API_CALLBACK = f"{TESTSERVER}/api/v1/auth/oidc/peer/callback"
ADMIN_CALLBACK = f"{TESTSERVER}/login/oidc/peer/callback/"


def provider_settings(issuer: str) -> dict[str, str]:
    return {"issuer": issuer, "client_id": CLIENT_ID, "client_secret": CLIENT_SECRET,
            "scopes": "openid email profile", "display_name": "Test Peer"}


@pytest.fixture(scope="session")
def oidc_peer() -> Iterator[OidcPeer]:
    peer = OidcPeer([API_CALLBACK, ADMIN_CALLBACK])
    yield peer
    peer.stop()


@pytest.fixture(autouse=True)
def forget_clients() -> Iterator[None]:
    # Each test starts with no discovery document or keys cached, as a fresh process would.
    oidc._clients.clear()
    yield
    oidc._clients.clear()


@pytest.fixture
def peer_provider(oidc_peer, settings) -> OidcPeer:
    settings.OIDC_PROVIDERS = {"peer": provider_settings(oidc_peer.issuer)}
    return oidc_peer


def rest_sign_in(client: APIClient, *, login: str) -> str:
    """Start the REST flow, walk the provider's pages, and return our callback's path and query (not yet
    requested)."""
    start = client.get("/api/v1/auth/oidc/peer/start")
    assert start.status_code == 302, start.content
    callback = peer_sign_in(start["Location"], login=login, redirect_prefix=TESTSERVER)
    parts = urlsplit(callback)
    return f"{parts.path}?{parts.query}"
