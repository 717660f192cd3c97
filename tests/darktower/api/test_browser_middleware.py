"""API requests that carry their credentials (a bearer token, an API key) skip the browser's middleware that they
have no use for (Django's session user, messages). Everything else walks it, and CSRF still protects the admin's
session-authenticated forms, whatever Authorization header comes along."""

from __future__ import annotations

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import User
from tests.factories import make_api_key, make_user, user_token
from tests.fixtures.admin import superuser  # noqa: F401 (fixture)

pytestmark = pytest.mark.django_db


def _walked_the_browser_middleware(request) -> bool:
    # What AuthenticationMiddleware and MessageMiddleware leave on the request they saw (DRF sets `user`, never
    # `auser`).
    return hasattr(request, "auser") or hasattr(request, "_messages")


@pytest.mark.parametrize("scheme", ["Bearer", "ApiKey"])
def test_an_api_request_with_credentials_skips_the_browser_middleware(scheme):
    user = make_user()
    credential = user_token(user) if scheme == "Bearer" else make_api_key(user=user, scopes=["meetings:read"]).raw_key
    response = Client(HTTP_AUTHORIZATION=f"{scheme} {credential}").get("/api/v1/meetings")
    assert response.status_code == 200, response.content
    assert not _walked_the_browser_middleware(response.wsgi_request)
    # Nor does it set a cookie of the browser's.
    assert not response.cookies


def test_other_requests_walk_the_browser_middleware(superuser):  # noqa: F811 (fixture)
    anonymous = Client().get("/api/v1/meetings")
    assert anonymous.status_code == 401
    assert _walked_the_browser_middleware(anonymous.wsgi_request)
    admin = Client()
    admin.force_login(superuser)
    page = admin.get(reverse("admin:index"))
    assert page.status_code == 200
    assert _walked_the_browser_middleware(page.wsgi_request)


@pytest.mark.parametrize("authorization", [None, "Bearer x", "ApiKey x"])
def test_csrf_still_protects_the_admin_forms(superuser, authorization):  # noqa: F811 (fixture)
    client = Client(enforce_csrf_checks=True, **({"HTTP_AUTHORIZATION": authorization} if authorization else {}))
    client.force_login(superuser)
    response = client.post(reverse("admin:accounts_user_add"), {"email": "new@example.com"})
    assert response.status_code == 403
    assert not User.objects.filter(email="new@example.com").exists()
