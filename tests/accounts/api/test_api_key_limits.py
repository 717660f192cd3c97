"""API-key creation is rate limited per caller (ratelimit:api:api-keys:create:user:<id>:<window>): 429 with
Retry-After over RATE_LIMIT_API_KEY_CREATE_PER_PRINCIPAL in a window; listing and revoking are not."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from accounts.models import ApiKey
from darktower.redis import redis_client
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/api-keys"


@pytest.fixture(autouse=True)
def long_windows(settings):
    # An hour-long fixed window: a test that straddled a window boundary would see its counter restart.
    settings.RATE_LIMIT_WINDOW_SECONDS = 3600


def test_key_creation_is_limited_per_caller(as_user, host, other, settings):
    settings.RATE_LIMIT_API_KEY_CREATE_PER_PRINCIPAL = 3
    settings.API_KEYS_MAX_ACTIVE_PER_USER = 100
    client = as_user(host)
    for number in range(3):
        assert client.post(KEYS, {"name": f"k{number}", "scopes": ["meetings:read"]}, format="json").status_code == 201

    refused = client.post(KEYS, {"name": "one more", "scopes": ["meetings:read"]}, format="json")

    assert_error(refused, 429, "throttled")
    assert 1 <= int(refused["Retry-After"]) <= django_settings.RATE_LIMIT_WINDOW_SECONDS
    assert ApiKey.objects.filter(user=host).count() == 3
    # Listing and revoking are not limited by it; another user has its own budget.
    assert client.get(KEYS).status_code == 200
    assert client.delete(f"{KEYS}/{ApiKey.objects.filter(user=host).first().pk}").status_code == 204
    assert as_user(other).post(KEYS, {"name": "k", "scopes": ["meetings:read"]}, format="json").status_code == 201
    keys = [key.decode() for key in redis_client().scan_iter(f"ratelimit:api:api-keys:create:user:{host.pk}:*")]
    assert len(keys) == 1
