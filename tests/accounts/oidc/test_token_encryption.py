"""Provider tokens at rest: encrypted in the column (read raw), decryptable after a key rotation, re-encrypted by
a command, and never in a log line, a repr or the admin."""

from __future__ import annotations

import io
import logging
from datetime import UTC, datetime

import pytest
import requests
from cryptography.fernet import InvalidToken
from django.core.management import call_command
from django.db import connection

from accounts.models import OAuthProvider
from accounts.oidc import ProviderIdentity
from accounts.provider_tokens import provider_token_decrypt, provider_token_encrypt
from tests.accounts.oidc.conftest import rest_sign_in
from tests.factories import make_user

pytestmark = pytest.mark.django_db


def _raw_tokens(link_id: int) -> tuple[bytes | None, bytes | None]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT access_token_encrypted, refresh_token_encrypted FROM oauth_providers WHERE id = %s", [link_id]
        )
        access, refresh = cursor.fetchone()
    return (None if access is None else bytes(access)), (None if refresh is None else bytes(refresh))


def test_the_providers_tokens_are_stored_encrypted_and_never_logged(api, peer_provider, caplog):
    caplog.set_level(logging.DEBUG)

    response = api.get(rest_sign_in(api, login="at-rest@example.test"))

    assert response.status_code == 200
    link = OAuthProvider.objects.get(provider_user_id="at-rest@example.test")
    access_raw, refresh_raw = _raw_tokens(link.pk)
    assert access_raw is not None and refresh_raw is not None
    access, refresh = provider_token_decrypt(access_raw), provider_token_decrypt(refresh_raw)
    assert access and refresh and access != refresh
    assert access.encode() not in access_raw and refresh.encode() not in refresh_raw
    assert link.token_expires_at is not None and link.token_expires_at > datetime.now(UTC)
    # What was stored is the provider's real access token: its userinfo endpoint accepts it.
    userinfo = requests.get(f"{peer_provider.issuer}/me", headers={"Authorization": f"Bearer {access}"}, timeout=10)
    assert userinfo.status_code == 200 and userinfo.json()["sub"] == "at-rest@example.test"
    for secret in (access, refresh):
        assert secret not in caplog.text
        assert secret not in repr(link)


def test_old_rows_decrypt_after_a_rotation_and_the_command_reencrypts_them(settings):
    settings.OIDC_TOKEN_ENCRYPTION_KEYS = ["old-key"]
    link = OAuthProvider.objects.create(
        user=make_user(), provider="peer", provider_user_id="rotated",
        access_token_encrypted=provider_token_encrypt("access-1"), refresh_token_encrypted=None,
    )
    untouched = OAuthProvider.objects.create(user=make_user(), provider="peer", provider_user_id="no-tokens")
    before, _ = _raw_tokens(link.pk)

    settings.OIDC_TOKEN_ENCRYPTION_KEYS = ["new-key", "old-key"]
    assert provider_token_decrypt(before) == "access-1"  # the old key still opens old rows
    out = io.StringIO()
    call_command("oidc_tokens_reencrypt", "--batch-size", "1", stdout=out)
    assert out.getvalue() == "1 provider link(s) re-encrypted\n"

    after, refresh_after = _raw_tokens(link.pk)
    assert after is not None and after != before and refresh_after is None
    settings.OIDC_TOKEN_ENCRYPTION_KEYS = ["new-key"]  # the old key dropped: the row still opens
    assert provider_token_decrypt(after) == "access-1"
    with pytest.raises(InvalidToken):
        provider_token_decrypt(before)
    untouched.refresh_from_db()
    assert untouched.access_token_encrypted is None


def test_tokens_stay_out_of_repr_and_the_admin(admin_client):
    identity = ProviderIdentity(
        provider="peer", subject="sub-1", email="x@example.test", email_verified=True, name="X",
        access_token="access-secret-value", refresh_token="refresh-secret-value", access_token_expires_at=None,
    )
    assert "secret-value" not in repr(identity)
    link = OAuthProvider.objects.create(
        user=make_user(), provider="peer", provider_user_id="sub-1",
        access_token_encrypted=provider_token_encrypt("access-secret-value"),
        refresh_token_encrypted=provider_token_encrypt("refresh-secret-value"),
    )

    page = admin_client.get(f"/admin/accounts/oauthprovider/{link.pk}/change/")

    assert page.status_code == 200
    assert b"secret-value" not in page.content
    assert b"encrypted" not in page.content.lower()
