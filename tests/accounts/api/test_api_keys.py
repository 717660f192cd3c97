"""API keys: shown once, stored as a hash and a prefix, listed without secrets, revoked, scoped, expiring."""

from __future__ import annotations

import hashlib
import re
import uuid
from datetime import timedelta

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey
from audit.models import AuditLog
from tests.factories import make_api_key
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/api-keys"
ME = "/api/v1/me"
KEY_FORMAT = re.compile(r"^dt_[0-9a-f]{8}_[A-Za-z0-9_-]{40,}$")


def key_client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"ApiKey {raw_key}")
    return client


def test_create_returns_the_key_once_and_stores_only_its_hash(as_user, host):
    expires = (timezone.now() + timedelta(days=30)).isoformat()
    response = as_user(host).post(
        KEYS, {"name": "ci", "scopes": ["meetings:read", "meetings:create"], "expires_at": expires}, format="json"
    )
    assert response.status_code == 201, response.content
    assert response["Cache-Control"] == "no-store"
    body = response.json()
    raw = body["key"]
    assert KEY_FORMAT.match(raw)
    assert raw.startswith(body["key_prefix"] + "_")
    assert body["scopes"] == ["meetings:create", "meetings:read"]
    assert body["active"] is True
    row = ApiKey.objects.get(pk=body["key_id"])
    assert row.key_hash == hashlib.sha256(raw.encode()).hexdigest()
    assert raw not in str(ApiKey.objects.filter(pk=row.pk).values().first())
    audit = AuditLog.objects.get(event_type="api_key_created")
    assert raw not in str(audit.metadata) and audit.target_id == str(row.pk)
    # The key works at once, with exactly its scopes.
    me = key_client(raw).get(ME).json()
    assert me["scopes"] == ["meetings:create", "meetings:read"]


def test_list_shows_own_keys_without_secrets(as_user, host, other, django_assert_num_queries):
    mine = [make_api_key(user=host, name=f"k{i}") for i in range(3)]
    make_api_key(user=other, name="theirs")
    client = as_user(host)
    with django_assert_num_queries(3):  # user by token subject, count, page
        response = client.get(KEYS)
    body = response.json()
    assert body["count"] == 3
    assert {item["key_id"] for item in body["results"]} == {str(k.api_key.pk) for k in mine}
    for item in body["results"]:
        assert "key" not in item and "key_hash" not in item
    assert all(k.raw_key not in response.content.decode() for k in mine)


def test_revoke_disables_the_key_and_is_idempotent(as_user, host):
    created = make_api_key(user=host)
    client = as_user(host)
    assert key_client(created.raw_key).get(ME).status_code == 200
    assert client.delete(f"{KEYS}/{created.api_key.pk}").status_code == 204
    assert_error(key_client(created.raw_key).get(ME), 401, "unauthenticated")
    assert client.delete(f"{KEYS}/{created.api_key.pk}").status_code == 204
    assert AuditLog.objects.filter(event_type="api_key_revoked").count() == 1
    listed = client.get(KEYS).json()["results"]
    assert listed[0]["active"] is False


def test_someone_elses_key_is_404(as_user, host, other):
    theirs = make_api_key(user=other)
    assert_error(as_user(host).delete(f"{KEYS}/{theirs.api_key.pk}"), 404, "not_found")
    assert_error(as_user(host).delete(f"{KEYS}/{uuid.uuid4()}"), 404, "not_found")
    assert ApiKey.objects.get(pk=theirs.api_key.pk).is_active


def test_expired_keys_are_refused(host):
    created = make_api_key(user=host)
    ApiKey.objects.filter(pk=created.api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert_error(key_client(created.raw_key).get(ME), 401, "unauthenticated")


def test_a_key_of_a_deactivated_user_is_refused(host):
    created = make_api_key(user=host)
    host.is_active = False
    host.save(update_fields=["is_active"])
    assert_error(key_client(created.raw_key).get(ME), 401, "unauthenticated")


def test_last_used_at_is_written_at_most_once_a_minute(host):
    created = make_api_key(user=host)
    client = key_client(created.raw_key)
    client.get(ME)
    first = ApiKey.objects.get(pk=created.api_key.pk).last_used_at
    assert first is not None
    client.get(ME)
    assert ApiKey.objects.get(pk=created.api_key.pk).last_used_at == first
    ApiKey.objects.filter(pk=created.api_key.pk).update(last_used_at=first - timedelta(minutes=2))
    client.get(ME)
    assert ApiKey.objects.get(pk=created.api_key.pk).last_used_at > first - timedelta(minutes=2)


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"name": "x", "scopes": []}, "scopes"),
        ({"name": "x", "scopes": "meetings:read"}, "scopes"),
        ({"name": "x", "scopes": ["meetings:delete-everything"]}, "scopes.0"),
        ({"name": "x", "scopes": ["controllers:read"]}, "scopes"),  # not one of a regular user's scopes
        ({"name": "x", "scopes": ["meetings:read"], "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
        ({"scopes": ["meetings:read"]}, "name"),
        ({"name": "x", "scopes": ["meetings:read"], "user_id": str(uuid.uuid4())}, "user_id"),
    ],
)
def test_create_validation(as_user, host, payload, field):
    error = assert_error(as_user(host).post(KEYS, payload, format="json"), 400, "invalid")
    assert field in error["fields"], error
    assert not ApiKey.objects.exists()


def test_operators_may_create_controller_keys(as_user, operator):
    response = as_user(operator).post(KEYS, {"name": "fleet", "scopes": ["controllers:read"]}, format="json")
    assert response.status_code == 201


def test_a_key_cannot_manage_keys(as_key, host):
    client = as_key(host, ["meetings:read", "meetings:create"])
    assert_error(client.get(KEYS), 403, "permission_denied")
    assert_error(client.post(KEYS, {"name": "x", "scopes": ["meetings:read"]}, format="json"), 403, "permission_denied")
    assert ApiKey.objects.count() == 1


def test_key_management_needs_authentication(api):
    assert_error(api.get(KEYS), 401, "unauthenticated")
    assert_error(api.post(KEYS, {"name": "x", "scopes": ["meetings:read"]}, format="json"), 401, "unauthenticated")
