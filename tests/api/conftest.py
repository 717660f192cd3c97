"""Clients for the REST API: a user's bearer token, an API key, or nobody."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import make_api_key, make_user, user_token


@pytest.fixture(autouse=True)
def roomy_rate_limits(settings):
    # All requests come from 127.0.0.1 within one window; the rate-limit tests set their own limits.
    settings.RATE_LIMIT_LOGIN_PER_IP = 100_000
    settings.RATE_LIMIT_LOGIN_PER_EMAIL = 100_000
    settings.RATE_LIMIT_LOGIN_PER_EMAIL_AND_IP = 100_000
    settings.RATE_LIMIT_MEETING_CREATE_PER_PRINCIPAL = 100_000
    settings.RATE_LIMIT_MEETING_UPDATE_PER_PRINCIPAL = 100_000
    settings.RATE_LIMIT_JOIN_PER_PRINCIPAL = 100_000
    settings.RATE_LIMIT_JOIN_PER_IP = 100_000
    settings.RATE_LIMIT_RECORDING_WRITE_PER_PRINCIPAL = 100_000


@pytest.fixture
def api():
    """An anonymous client."""
    return APIClient()


@pytest.fixture
def as_user():
    """as_user(user) -> a client sending that user's bearer token (optionally with fewer scopes)."""

    def build(user, scopes=None):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {user_token(user, scopes=scopes)}")
        return client

    return build


@pytest.fixture
def as_key():
    """as_key(user, scopes) -> a client sending a fresh API key of that user with those scopes."""

    def build(user, scopes):
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"ApiKey {make_api_key(user=user, scopes=scopes).raw_key}")
        return client

    return build


@pytest.fixture
def host(db):
    return make_user(display_name="Host")


@pytest.fixture
def other(db):
    return make_user(display_name="Other")
