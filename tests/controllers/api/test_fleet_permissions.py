"""The fleet over REST follows the admin's permissions: controllers:read comes from the admin's view permissions
on controllers and media handlers, controllers:write from its drain permission (drain and undrain), both only
for active staff, as the admin itself requires. Every fleet endpoint against every kind of operator, each with
four credentials: a token as login issues it, a key as POST /api/v1/api-keys makes it (the user's own scopes),
and a token and a key that carry every scope (issued, or made, while the rule was looser): what the user may
do now decides, whatever the credential says."""

from __future__ import annotations

import json
import secrets
from datetime import timedelta
from importlib import import_module

import pytest
from django.apps import apps
from django.contrib.auth.models import Group, Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.models import ApiKey
from accounts.services.api_keys import api_key_hash
from accounts.services.users import ALL_SCOPES, user_scopes
from controllers.models import MeetingController
from tests.factories import make_api_key, make_controller, make_handler, make_user, user_token
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

_groups = import_module("accounts.migrations.0003_operator_groups")

# name, method, path, body, writes
ENDPOINTS = [
    ("controllers_list", "GET", "/api/v1/controllers", None, False),
    ("media_handlers_list", "GET", "/api/v1/media-handlers", None, False),
    ("controllers_drain", "POST", "/api/v1/controllers/{controller}/drain", {"deadline_seconds": 0}, True),
    ("controllers_undrain", "POST", "/api/v1/controllers/{draining}/undrain", None, True),
]

# actor -> (may read, may write)
ACTORS = {
    "operator viewer": (True, False),
    "operator": (True, True),
    "superuser": (True, True),
    "staff without a group": (False, False),
    "staff with the view permissions": (True, False),
    "staff with only the drain permission": (False, False),  # the admin shows no fleet to drain from either
    "operator group without staff": (False, False),  # the admin lets no one in who is not staff
}

CREDENTIALS = ("login token", "key with the user's scopes", "token with every scope", "key with every scope")


def _actor(name):
    _groups.operator_groups_sync(apps)  # idempotent; a transactional test elsewhere may have flushed the groups
    if name == "superuser":
        return make_user(is_staff=True, is_superuser=True)
    user = make_user(is_staff=name != "operator group without staff")
    if name == "operator viewer":
        user.groups.add(Group.objects.get(name=_groups.VIEWER))
    elif name in ("operator", "operator group without staff"):
        user.groups.add(Group.objects.get(name=_groups.OPERATOR))
    elif name == "staff with the view permissions":
        user.user_permissions.add(*Permission.objects.filter(
            content_type__app_label="controllers", codename__in=["view_meetingcontroller", "view_mediahandler"]
        ))
    elif name == "staff with only the drain permission":
        user.user_permissions.add(Permission.objects.get(codename="drain_meetingcontroller"))
    return user


def _client(user, credential):
    if credential == "login token":
        header = f"Bearer {user_token(user)}"
    elif credential == "token with every scope":
        header = f"Bearer {user_token(user, scopes=sorted(ALL_SCOPES))}"
    elif credential == "key with the user's scopes":
        header = f"ApiKey {make_api_key(user=user, scopes=sorted(user_scopes(user))).raw_key}"
    else:
        # A row as a key made under a looser rule would be: the service no longer makes such keys.
        prefix = f"dt_{secrets.token_hex(4)}"
        raw = f"{prefix}_{secrets.token_urlsafe(32)}"
        ApiKey.objects.create(user=user, key_hash=api_key_hash(raw), key_prefix=prefix, name="old",
                              scopes=sorted(ALL_SCOPES))
        header = f"ApiKey {raw}"
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


@pytest.fixture
def fleet():
    make_handler(region="us-east-1")
    return {
        "controller": make_controller(region="us-east-1").controller_id,
        "draining": make_controller(
            region="us-east-1", health="draining", drain_deadline=timezone.now() + timedelta(hours=1)
        ).controller_id,
    }


@pytest.mark.parametrize("credential", CREDENTIALS)
@pytest.mark.parametrize(("endpoint", "method", "path", "body", "writes"), ENDPOINTS, ids=[e[0] for e in ENDPOINTS])
@pytest.mark.parametrize("actor", list(ACTORS))
def test_fleet_endpoints_follow_the_admin_permissions(fleet, actor, endpoint, method, path, body, writes, credential):
    may_read, may_write = ACTORS[actor]
    allowed = may_write if writes else may_read
    before = {row["controller_id"]: row["health_status"] for row in _controller_rows()}

    response = _client(_actor(actor), credential).generic(
        method, path.format(**fleet), "" if body is None else json.dumps(body), content_type="application/json"
    )

    if allowed:
        assert response.status_code == 200, response.content
    else:
        assert_error(response, 403, "permission_denied")
        assert {row["controller_id"]: row["health_status"] for row in _controller_rows()} == before


def _controller_rows():
    return MeetingController.objects.values("controller_id", "health_status")


@pytest.mark.parametrize("actor", list(ACTORS))
def test_login_scopes_follow_the_admin_permissions(actor):
    may_read, may_write = ACTORS[actor]
    scopes = user_scopes(_actor(actor))
    assert ("controllers:read" in scopes, "controllers:write" in scopes) == (may_read, may_write)


def _queries(client, path):
    with CaptureQueriesContext(connection) as queries:
        assert client.get(path).status_code == 200
    return len(queries)


def test_permissions_are_read_only_for_a_credential_with_a_fleet_scope(operator):
    # Every request re-checks its credential's scopes; the fleet's permissions cost two queries (the user's and
    # its groups'), paid only by a credential that carries a fleet scope, never by anyone else's requests.
    regular = _queries(_client(make_user(), "login token"), "/api/v1/me")
    assert _queries(_client(_actor("staff without a group"), "login token"), "/api/v1/me") == regular
    assert _queries(_client(_actor("superuser"), "login token"), "/api/v1/me") == regular
    narrowed = APIClient()
    narrowed.credentials(HTTP_AUTHORIZATION=f"Bearer {user_token(operator, scopes=['meetings:read'])}")
    assert _queries(narrowed, "/api/v1/me") == regular
    assert _queries(_client(operator, "login token"), "/api/v1/me") == regular + 2
