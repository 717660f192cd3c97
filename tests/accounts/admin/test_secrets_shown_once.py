"""A new API key or client secret made in the admin is shown once on the response page itself (no-store), never
through django.contrib.messages: the messages cookie is signed, not encrypted, so whoever reads the browser's
cookies (or a proxy's logs) would read the secret from it."""

from __future__ import annotations

from urllib.parse import urlencode

import pytest
from django.urls import reverse

from accounts.models import ApiKey, ServiceCredential
from accounts.services.api_keys import api_key_hash
from accounts.services.service_tokens import secret_hash, service_credential_create
from tests.factories import make_user
from tests.fixtures.secrets import assert_not_in_cookies, shown_secrets

pytestmark = pytest.mark.django_db

TOKEN_URL = "/api/v1/auth/service/token"


@pytest.fixture(autouse=True)
def roomy_rate_limits(settings):
    settings.RATE_LIMIT_TOKEN_PER_IP = 100_000
    settings.RATE_LIMIT_TOKEN_PER_CLIENT = 100_000


def _token_status(client, client_id: str, secret: str) -> int:
    body = urlencode({"grant_type": "client_credentials", "client_id": client_id, "client_secret": secret})
    return client.post(TOKEN_URL, data=body, content_type="application/x-www-form-urlencoded").status_code


def _next_page_is_clean(client, url: str, secret: str) -> None:
    later = client.get(url)
    assert secret not in later.content.decode()
    assert_not_in_cookies(later, secret)


def test_a_new_api_key_is_shown_on_the_page_once(client, superuser):
    owner = make_user()
    client.force_login(superuser)

    response = client.post(reverse("admin:accounts_apikey_add"),
                           {"user": str(owner.pk), "name": "ci", "scopes": ["meetings:read"]})

    [raw] = shown_secrets(response)
    key = ApiKey.objects.get(user=owner, name="ci")
    assert api_key_hash(raw) == key.key_hash
    assert response.content.decode().count(raw) == 1
    assert key.key_prefix in response.content.decode()
    assert_not_in_cookies(response, raw)
    _next_page_is_clean(client, reverse("admin:accounts_apikey_changelist"), raw)


def test_a_new_client_secret_is_shown_on_the_page_once(client, superuser):
    client.force_login(superuser)

    response = client.post(reverse("admin:accounts_servicecredential_add"),
                           {"name": "mc fleet eu", "scopes": ["mc:register"]})

    [secret] = shown_secrets(response)
    credential = ServiceCredential.objects.get(name="mc fleet eu")
    assert secret_hash(secret) == credential.secret_hash
    assert response.content.decode().count(secret) == 1
    assert credential.client_id in response.content.decode()
    assert_not_in_cookies(response, secret)
    assert _token_status(client, credential.client_id, secret) == 200
    _next_page_is_clean(client, reverse("admin:accounts_servicecredential_changelist"), secret)


def test_rotated_client_secrets_are_shown_on_the_page_once(client, superuser):
    first = service_credential_create(name="mc fleet a", scopes=["mc:register"]).credential
    second = service_credential_create(name="mc fleet b", scopes=["mh:register"]).credential
    client.force_login(superuser)
    url = reverse("admin:accounts_servicecredential_changelist")

    response = client.post(url, {"action": "rotate_secret_action", "_selected_action": [first.pk, second.pk],
                                 "post": "yes"})

    secrets = shown_secrets(response)
    assert len(secrets) == 2
    html = response.content.decode()
    by_client = {}
    for credential in (first, second):
        credential.refresh_from_db()
        [secret] = [s for s in secrets if secret_hash(s) == credential.secret_hash]
        assert html.count(secret) == 1
        assert html.index(credential.client_id) < html.index(secret)  # each secret under its client's name
        assert_not_in_cookies(response, secret)
        by_client[credential.client_id] = secret
    for client_id, secret in by_client.items():
        assert _token_status(client, client_id, secret) == 200
        _next_page_is_clean(client, url, secret)
