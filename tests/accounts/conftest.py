"""Fixtures of the service-token tests (the token endpoint in-process and over a live server)."""

from __future__ import annotations

import pytest

from accounts.services.service_tokens import service_credential_create


@pytest.fixture
def roomy_token_rate_limits(settings):
    # Every request comes from one address within one window; the limit tests set their own.
    settings.RATE_LIMIT_TOKEN_PER_IP = 100_000
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 100_000


@pytest.fixture
def credential() -> tuple[str, str]:
    """(client_id, client_secret) of a credential holding both registration scopes."""
    created = service_credential_create(name="mc fleet", scopes=["mc:register", "mh:register"])
    return created.credential.client_id, created.client_secret
