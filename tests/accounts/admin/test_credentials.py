"""Credentials operated from the admin: a service credential's secret is rotated (old refused at the token
endpoint at once, new one works) and API keys made or revoked by an operator are audited under the operator."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.urls import reverse

from accounts.models import ApiKey, ServiceCredential
from accounts.services.api_keys import api_key_revoke
from accounts.services.service_tokens import (
    secret_hash,
    service_credential_create,
    service_credential_revoke,
    service_credential_rotate_secret,
)
from audit.models import AuditLog
from darktower.errors import Conflict, NotFound
from tests.factories import make_api_key, make_user
from tests.fixtures.secrets import shown_secrets

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/service/token"


@pytest.fixture(autouse=True)
def roomy_rate_limits(settings):
    settings.RATE_LIMIT_TOKEN_PER_IP = 100_000
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 100_000


def _token_status(client, client_id: str, secret: str) -> int:
    body = urlencode({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    return client.post(TOKEN_URL, data=body, content_type="application/x-www-form-urlencoded").status_code


def test_rotate_secret_service(client, operator_user):
    created = service_credential_create(name="mc fleet", scopes=["mc:register"])
    client_id, old_secret = created.credential.client_id, created.client_secret
    assert _token_status(client, client_id, old_secret) == 200

    rotated = service_credential_rotate_secret(client_id=client_id, actor_user_id=operator_user.pk)

    assert rotated.client_secret != old_secret
    assert rotated.client_secret not in repr(rotated)
    assert ServiceCredential.objects.get(client_id=client_id).secret_hash == secret_hash(rotated.client_secret)
    assert _token_status(client, client_id, old_secret) == 401
    assert _token_status(client, client_id, rotated.client_secret) == 200
    audit = AuditLog.objects.get(event_type="service_credential_secret_rotated", target_id=client_id)
    assert audit.actor_user_id == operator_user.pk and audit.actor_type == "user"
    assert rotated.client_secret not in str(audit.metadata)


def test_rotate_refuses_revoked_and_unknown_credentials():
    created = service_credential_create(name="gone", scopes=["mh:register"])
    service_credential_revoke(client_id=created.credential.client_id)

    with pytest.raises(Conflict):
        service_credential_rotate_secret(client_id=created.credential.client_id)
    with pytest.raises(NotFound):
        service_credential_rotate_secret(client_id="svc_" + "0" * 24)
    assert ServiceCredential.objects.get(pk=created.credential.pk).secret_hash == secret_hash(created.client_secret)
    assert not AuditLog.objects.filter(event_type="service_credential_secret_rotated").exists()


def test_rotate_secret_admin_action_shows_the_new_secret_once(client, superuser):
    created = service_credential_create(name="mc fleet eu", scopes=["mc:register"])
    client_id = created.credential.client_id
    client.force_login(superuser)
    url = reverse("admin:accounts_servicecredential_changelist")
    form = {"action": "rotate_secret_action", "_selected_action": [created.credential.pk]}

    confirm = client.post(url, form)
    assert confirm.status_code == 200 and b"Rotate client secrets" in confirm.content
    assert ServiceCredential.objects.get(pk=created.credential.pk).secret_hash == secret_hash(created.client_secret)

    done = client.post(url, {**form, "post": "yes"})

    shown = shown_secrets(done)  # on the answering page, not in a message (test_secrets_shown_once)
    assert len(shown) == 1
    new_secret = shown[0]
    assert _token_status(client, client_id, created.client_secret) == 401
    assert _token_status(client, client_id, new_secret) == 200
    audit = AuditLog.objects.get(event_type="service_credential_secret_rotated", target_id=client_id)
    assert audit.actor_user_id == superuser.pk
    later = client.get(reverse("admin:accounts_servicecredential_change", args=[created.credential.pk]))
    assert new_secret not in later.content.decode()


def test_api_key_created_in_admin_audits_the_operator(client, superuser):
    owner = make_user(is_staff=True)
    client.force_login(superuser)

    client.post(reverse("admin:accounts_apikey_add"), {"user": str(owner.pk), "name": "ci",
                                                      "scopes": ["meetings:read"]})

    key = ApiKey.objects.get(user=owner, name="ci")
    audit = AuditLog.objects.get(event_type="api_key_created", target_id=str(key.pk))
    assert audit.actor_user_id == superuser.pk
    assert audit.metadata["owner_user_id"] == str(owner.pk)


def test_api_key_revoked_in_admin_audits_the_operator(client, superuser):
    owner = make_user()
    created = make_api_key(user=owner)
    client.force_login(superuser)

    client.post(reverse("admin:accounts_apikey_changelist"),
                {"action": "revoke_action", "_selected_action": [created.api_key.pk], "post": "yes"})

    created.api_key.refresh_from_db()
    assert created.api_key.is_active is False
    audit = AuditLog.objects.get(event_type="api_key_revoked", target_id=str(created.api_key.pk))
    assert audit.actor_user_id == superuser.pk
    assert audit.metadata["owner_user_id"] == str(owner.pk)


def test_api_key_service_defaults_the_actor_to_the_owner():
    owner, other = make_user(), make_user()
    created = make_api_key(user=owner)

    with pytest.raises(NotFound):
        api_key_revoke(key_id=created.api_key.pk, actor_user_id=other.pk)
    api_key_revoke(key_id=created.api_key.pk, actor_user_id=owner.pk)

    made = AuditLog.objects.get(event_type="api_key_created", target_id=str(created.api_key.pk))
    revoked = AuditLog.objects.get(event_type="api_key_revoked", target_id=str(created.api_key.pk))
    assert made.actor_user_id == owner.pk and revoked.actor_user_id == owner.pk
