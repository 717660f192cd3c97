"""The signing-key admin's revoke action: confirmed, audited under the operator, only for holders of
accounts.change_signingkey (superusers), and every token of the key is refused at once."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from accounts.signing import signing_key_active
from accounts.tokens import token_issue, token_verify
from audit.models import AuditLog
from darktower.errors import Unauthenticated
from tests.factories import make_user

pytestmark = pytest.mark.django_db

AUD = "darktower-internal"


def issue() -> str:
    return token_issue(subject="svc_x", audience=AUD, scopes=["mc:register"], lifetime_seconds=600).token


def assert_refused(token: str) -> None:
    with pytest.raises(Unauthenticated, match="unknown signing key"):
        token_verify(token, audience=AUD)


def test_the_admin_action_is_confirmed_audited_and_ends_the_keys_tokens(client, superuser):
    token = issue()
    kid = signing_key_active().kid
    client.force_login(superuser)
    url = reverse("admin:accounts_signingkey_changelist")
    form = {"action": "revoke_action", "_selected_action": [kid]}

    confirm = client.post(url, form)
    assert confirm.status_code == 200 and b"Revoke signing keys" in confirm.content
    assert token_verify(token, audience=AUD)  # nothing happens before the confirmation

    done = client.post(url, {**form, "post": "yes"}, follow=True)

    assert done.status_code == 200
    assert any("revoked" in str(message) for message in done.context["messages"])
    assert_refused(token)
    assert AuditLog.objects.get(event_type="signing_key_revoked", target_id=kid).actor_user_id == superuser.pk


def test_a_staff_user_granted_the_signing_key_permission_may_revoke(client):
    kid = signing_key_active().kid
    keeper = make_user(is_staff=True)
    keeper.user_permissions.add(
        *Permission.objects.filter(content_type__app_label="accounts", codename__in=["view_signingkey",
                                                                                     "change_signingkey"])
    )
    client.force_login(keeper)
    url = reverse("admin:accounts_signingkey_changelist")

    client.post(url, {"action": "revoke_action", "_selected_action": [kid], "post": "yes"})

    assert AuditLog.objects.get(event_type="signing_key_revoked", target_id=kid).actor_user_id == keeper.pk


@pytest.mark.parametrize("who", ["viewer_user", "plain_staff"])
def test_the_admin_action_is_refused_without_the_signing_key_permission(client, who, request):
    token = issue()
    kid = signing_key_active().kid
    user = make_user(is_staff=True) if who == "plain_staff" else request.getfixturevalue(who)
    client.force_login(user)
    url = reverse("admin:accounts_signingkey_changelist")

    response = client.post(url, {"action": "revoke_action", "_selected_action": [kid], "post": "yes"})

    assert response.status_code in (302, 403)
    assert token_verify(token, audience=AUD)
    assert not AuditLog.objects.filter(event_type="signing_key_revoked").exists()
