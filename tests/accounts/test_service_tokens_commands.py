"""manage.py create_service_credential / revoke_service_credential / rotate_signing_key."""

from __future__ import annotations

import base64
import hashlib
import logging
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from accounts.models import ServiceCredential, SigningKey
from accounts.signing import signing_key_active
from audit.models import AuditLog

pytestmark = pytest.mark.django_db

URL = "/api/v1/auth/service/token"


@pytest.fixture(autouse=True)
def roomy_rate_limits(settings):
    settings.RATE_LIMIT_TOKEN_PER_IP = 100_000
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 100_000


def run(*args):
    out, err = StringIO(), StringIO()
    call_command(*args, stdout=out, stderr=err)
    return out.getvalue(), err.getvalue()


def create(*args):
    out, err = run("create_service_credential", *args)
    lines = dict(line.split(": ", 1) for line in out.strip().splitlines())
    return lines, out, err


def token_status(client, client_id, secret):
    header = "Basic " + base64.b64encode(f"{client_id}:{secret}".encode()).decode()
    return client.post(URL, data="grant_type=client_credentials", content_type="application/x-www-form-urlencoded",
                       HTTP_AUTHORIZATION=header).status_code


def test_create_prints_id_and_secret_once_and_they_work(client, caplog):
    caplog.set_level(logging.DEBUG)
    lines, _, err = create("--name", "mc us-east-1", "--scopes", "mc:register,mh:register")
    client_id, secret = lines["client_id"], lines["client_secret"]
    assert lines["scopes"] == "mc:register mh:register"
    assert "cannot be shown again" in err
    assert secret not in err
    credential = ServiceCredential.objects.get(client_id=client_id)
    assert credential.name == "mc us-east-1"
    assert credential.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert token_status(client, client_id, secret) == 200
    # Nothing but the command's own output ever holds the secret: not the logs, not the audit trail.
    assert all(secret not in record.getMessage() and secret not in str(record.__dict__) for record in caplog.records)
    assert not any(secret in str(row.metadata) or secret in (row.error_message or "") for row in AuditLog.objects.all())


def test_create_with_one_scope(client):
    lines, _, _ = create("--name", "mh", "--scopes", "mh:register")
    assert ServiceCredential.objects.get(client_id=lines["client_id"]).scopes == ["mh:register"]


@pytest.mark.parametrize("scopes", ["mc:register,admin", "", ",", "meetings:create"])
def test_create_refuses_unknown_scopes(scopes):
    with pytest.raises(CommandError, match="scope"):
        run("create_service_credential", "--name", "x", "--scopes", scopes)
    assert not ServiceCredential.objects.exists()


def test_create_requires_name_and_scopes():
    with pytest.raises(CommandError):
        run("create_service_credential", "--scopes", "mc:register")
    with pytest.raises(CommandError):
        run("create_service_credential", "--name", "x")


def test_revoke_command(client):
    lines, _, _ = create("--name", "mc", "--scopes", "mc:register")
    assert token_status(client, lines["client_id"], lines["client_secret"]) == 200
    out, _ = run("revoke_service_credential", lines["client_id"])
    assert out.strip() == f"{lines['client_id']} revoked; 1 unexpired token(s) blacklisted"
    assert token_status(client, lines["client_id"], lines["client_secret"]) == 401
    out, _ = run("revoke_service_credential", lines["client_id"])
    assert "already revoked" in out


def test_revoke_unknown_client_fails():
    with pytest.raises(CommandError, match="No such service credential"):
        run("revoke_service_credential", "svc_" + "9" * 24)


def test_rotate_signing_key_prints_the_new_active_kid():
    old = signing_key_active().kid
    out, _ = run("rotate_signing_key")
    new = out.strip()
    assert new != old
    assert SigningKey.objects.get(is_active=True).kid == new
    retired = SigningKey.objects.get(kid=old)
    assert not retired.is_active and retired.publish_until is not None
    assert signing_key_active().kid == new


def test_an_operator_chooses_the_client_id_a_fleet_is_configured_with(client):
    lines, _, _ = create("--name", "dark tower mcs", "--scopes", "mc:register", "--client-id", "meeting-controller")
    assert lines["client_id"] == "meeting-controller"
    assert ServiceCredential.objects.get(client_id="meeting-controller").scopes == ["mc:register"]
    assert token_status(client, "meeting-controller", lines["client_secret"]) == 200


@pytest.mark.parametrize(("client_id", "message"), [
    ("meeting-controller", "exists already"), ("Meeting Controller", "Invalid client id"), ("mc", "Invalid client id"),
])
def test_a_taken_or_malformed_client_id_is_refused(client_id, message):
    create("--name", "first", "--scopes", "mc:register", "--client-id", "meeting-controller")
    with pytest.raises(CommandError, match=message):
        create("--name", "second", "--scopes", "mc:register", "--client-id", client_id)
    assert ServiceCredential.objects.count() == 1


def test_the_admin_add_form_takes_a_client_id_and_refuses_a_taken_one(client, django_user_model):
    from django.urls import reverse

    admin = django_user_model.objects.create_superuser("root@example.test", "pw")
    client.force_login(admin)
    url = reverse("admin:accounts_servicecredential_add")
    created = client.post(url, {"name": "mh fleet", "scopes": ["mh:register"], "client_id": "media-handler"})
    assert created.status_code == 200 and b"media-handler" in created.content  # the secret page
    assert ServiceCredential.objects.filter(client_id="media-handler").exists()
    again = client.post(url, {"name": "other", "scopes": ["mh:register"], "client_id": "media-handler"})
    assert again.status_code == 200 and b"exists already" in again.content
    assert ServiceCredential.objects.count() == 1
