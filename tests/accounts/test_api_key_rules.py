"""The rules of API keys, whichever door creates them (POST /api/v1/api-keys for oneself, the admin's add form for
anyone): one service decides (accounts.services.api_keys). A key's scopes are capped by its owner's current
scopes on every request, so an operator who loses the permission loses it in every key at once."""

from __future__ import annotations

import threading
import time
from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps
from django.contrib.auth.models import Group
from django.db import connection, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey, User
from controllers.models import MeetingController
from darktower.errors import Conflict
from tests.factories import make_api_key, make_controller, make_user, user_token

pytestmark = pytest.mark.django_db

KEYS = "/api/v1/api-keys"
_groups = import_module("accounts.migrations.0003_operator_groups")


def _in_group(user: User, name: str) -> User:
    _groups.operator_groups_sync(apps)  # idempotent; a transactional test elsewhere may have flushed the groups
    user.groups.add(Group.objects.get(name=name))
    return user


def _key_client(raw_key: str) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"ApiKey {raw_key}")
    return client


def _drain(client: APIClient, controller_id: str):
    return client.post(f"/api/v1/controllers/{controller_id}/drain", {"deadline_seconds": 600}, format="json")


def _demote_by_group(user: User) -> None:
    user.groups.clear()


def _demote_by_staff(user: User) -> None:
    User.objects.filter(pk=user.pk).update(is_staff=False)


@pytest.mark.parametrize("demote", [_demote_by_group, _demote_by_staff], ids=["leaves the group", "loses staff"])
def test_a_demoted_operators_key_loses_controllers_write_at_once(operator, demote):
    key = make_api_key(user=operator, scopes=["controllers:read", "controllers:write"])
    client = _key_client(key.raw_key)
    make_controller(controller_id="mc-a")
    make_controller(controller_id="mc-b")
    assert _drain(client, "mc-a").status_code == 200

    demote(operator)

    response = _drain(client, "mc-b")
    assert response.status_code == 403, response.content
    assert response.json()["error"]["code"] == "permission_denied"
    assert "controllers:write" not in client.get("/api/v1/me").json()["scopes"]
    # The key itself is unchanged: the cap is applied per request, from the owner's current permissions.
    assert ApiKey.objects.get(pk=key.api_key.pk).scopes == ["controllers:read", "controllers:write"]
    assert MeetingController.objects.get(pk="mc-b").health_status == "healthy"


def test_a_viewer_keeps_reading_after_losing_the_operator_group(operator):
    key = make_api_key(user=operator, scopes=["controllers:read", "controllers:write"])
    operator.groups.clear()
    _in_group(operator, _groups.VIEWER)
    client = _key_client(key.raw_key)
    assert client.get("/api/v1/controllers").status_code == 200
    assert client.get("/api/v1/me").json()["scopes"] == ["controllers:read"]


# Both doors --------------------------------------------------------------------------------------------------

def _create(door: str, *, user: User, scopes: list[str], expires_at=None) -> tuple[bool, int, str]:
    """Ask for a key of `user` through a door: (created, status, what the page or body says)."""
    before = ApiKey.objects.filter(user=user).count()
    if door == "rest":
        client = APIClient()
        client.credentials(HTTP_AUTHORIZATION=f"Bearer {user_token(user)}")
        body = {"name": "k", "scopes": scopes, **({"expires_at": expires_at.isoformat()} if expires_at else {})}
        response = client.post(KEYS, body, format="json")
        text = response.content.decode()
    else:
        client = Client()
        client.force_login(make_user(is_staff=True, is_superuser=True))
        form = {"user": str(user.pk), "name": "k", "scopes": scopes}
        if expires_at:
            local = timezone.localtime(expires_at)
            form.update({"expires_at_0": local.strftime("%Y-%m-%d"), "expires_at_1": local.strftime("%H:%M:%S")})
        response = client.post(reverse("admin:accounts_apikey_add"), form)
        text = response.content.decode()
    created = ApiKey.objects.filter(user=user).count() - before
    assert created in (0, 1)
    return bool(created), response.status_code, text


DOORS = ["rest", "admin"]
REFUSED_STATUS = {"rest": 400, "admin": 200}  # the admin shows its form again, with the error


def _regular():
    return make_user()


def _viewer():
    return _in_group(make_user(is_staff=True), _groups.VIEWER)


# case, owner, scopes, expires in, what the refusal says
REFUSALS = [
    ("fleet scope for a regular user", _regular, ["controllers:read"], None, "controllers:read"),
    ("write scope for an operator viewer", _viewer, ["controllers:write"], None, "controllers:write"),
    ("staff without a group", lambda: make_user(is_staff=True), ["controllers:read"], None, "controllers:read"),
    ("an expiry in the past", _regular, ["meetings:read"], timedelta(hours=-1), "future"),
]


@pytest.mark.parametrize("door", DOORS)
@pytest.mark.parametrize(("case", "owner", "scopes", "expires_in", "says"), REFUSALS, ids=[r[0] for r in REFUSALS])
def test_key_creation_rules_hold_through_both_doors(door, case, owner, scopes, expires_in, says):
    expires_at = timezone.now() + expires_in if expires_in is not None else None
    created, status, text = _create(door, user=owner(), scopes=scopes, expires_at=expires_at)
    assert not created
    assert status == REFUSED_STATUS[door]
    assert says in text


@pytest.mark.parametrize("door", DOORS)
def test_an_operator_gets_a_fleet_key_through_both_doors(door, operator):
    created, _, text = _create(door, user=operator, scopes=["controllers:read", "controllers:write"],
                                    expires_at=timezone.now() + timedelta(days=1))
    assert created, text[:2000]


# The per-user cap on active keys -----------------------------------------------------------------------------

@pytest.mark.parametrize("door", DOORS)
def test_active_keys_per_user_are_capped_through_both_doors(door, settings):
    settings.API_KEYS_MAX_ACTIVE_PER_USER = 3
    owner = make_user()
    kept = [make_api_key(user=owner) for _ in range(3)]

    created, status, text = _create(door, user=owner, scopes=["meetings:read"])

    assert not created
    assert status == {"rest": 409, "admin": 200}[door]
    assert "3 active API keys" in text and "revoke" in text
    if door == "rest":
        assert '"code":"conflict"' in text
    # Revoked and expired keys do not count: each frees a place.
    ApiKey.objects.filter(pk=kept[0].api_key.pk).update(is_active=False)
    assert _create(door, user=owner, scopes=["meetings:read"])[0]
    ApiKey.objects.filter(pk=kept[1].api_key.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert _create(door, user=owner, scopes=["meetings:read"])[0]
    assert not _create(door, user=owner, scopes=["meetings:read"])[0]
    # The cap is per user: another user has its own.
    assert _create(door, user=make_user(), scopes=["meetings:read"])[0]


def test_the_cap_holds_in_the_service_itself(settings):
    settings.API_KEYS_MAX_ACTIVE_PER_USER = 1
    owner = make_user()
    make_api_key(user=owner)
    with pytest.raises(Conflict) as refused:
        make_api_key(user=owner)
    assert "1 active API keys" in refused.value.message
    assert ApiKey.objects.filter(user=owner).count() == 1


@pytest.mark.django_db(transaction=True)
def test_two_concurrent_creations_cannot_both_take_the_last_place(settings):
    # Another request is creating the user's last allowed key: it holds the user's creation lock and has
    # inserted its row, not yet committed. A creation that starts now must wait for it and then be refused;
    # without the lock it would count the committed keys only (none) and make a second.
    settings.API_KEYS_MAX_ACTIVE_PER_USER = 1
    owner = make_user()
    results = {}

    def create():
        try:
            results["created"] = make_api_key(user=owner)
        except Exception as exc:  # reported by the assertions below
            results["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=create)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM users WHERE user_id = %s FOR NO KEY UPDATE", [owner.pk])
        ApiKey.objects.create(user=owner, key_hash="0" * 64, key_prefix="dt_00000000", name="first",
                              scopes=["meetings:read"])
        thread.start()
        deadline = time.monotonic() + 30
        waiting = 0
        while not waiting and time.monotonic() < deadline:
            # A transaction sees one snapshot of pg_stat_activity unless it asks for a fresh one.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database() AND query LIKE '%%FOR NO KEY UPDATE%%'")
            waiting = cursor.fetchone()[0]
            time.sleep(0.02)
        assert waiting == 1, "the second creation never waited for the first"
    thread.join(timeout=30)

    assert isinstance(results.get("error"), Conflict), results
    assert ApiKey.objects.filter(user=owner).count() == 1


@pytest.mark.django_db(transaction=True)
def test_the_admin_loses_the_race_for_the_last_place_with_a_message_not_an_error(settings):
    # The add form's check passes (the other creation has not committed); the service then waits for the
    # user's lock, counts again and refuses: the admin answers with its form page and a message, never a 500.
    settings.API_KEYS_MAX_ACTIVE_PER_USER = 1
    owner = make_user()
    client = Client()
    client.force_login(make_user(is_staff=True, is_superuser=True))
    results = {}

    def post():
        try:
            results["response"] = client.post(reverse("admin:accounts_apikey_add"),
                                              {"user": str(owner.pk), "name": "k", "scopes": ["meetings:read"]})
        except Exception as exc:  # reported by the assertions below
            results["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=post)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("SELECT 1 FROM users WHERE user_id = %s FOR NO KEY UPDATE", [owner.pk])
        ApiKey.objects.create(user=owner, key_hash="0" * 64, key_prefix="dt_00000000", name="first",
                              scopes=["meetings:read"])
        thread.start()
        deadline = time.monotonic() + 30
        waiting = 0
        while not waiting and time.monotonic() < deadline:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database() AND query LIKE '%%FOR NO KEY UPDATE%%'")
            waiting = cursor.fetchone()[0]
            time.sleep(0.02)
        assert waiting == 1, "the admin's creation never waited for the other one"
    thread.join(timeout=30)

    assert "error" not in results, results
    response = results["response"]
    assert response.status_code == 302 and response["Location"].endswith(reverse("admin:accounts_apikey_add"))
    page = client.get(response["Location"]).content.decode()
    assert "At most 1 active API keys" in page
    assert ApiKey.objects.filter(user=owner).count() == 1
