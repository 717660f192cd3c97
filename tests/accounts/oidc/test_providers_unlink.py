"""A user's provider links over REST: listed without tokens, unlinked unless it is the last way in."""

from __future__ import annotations

import threading

import pytest

from accounts.models import OAuthProvider, User
from accounts.provider_tokens import provider_token_encrypt
from accounts.services.oidc import oauth_provider_unlink
from audit.models import AuditLog
from darktower.errors import Conflict
from tests.factories import make_user
from tests.fixtures.jobs import run_twice_at_once

pytestmark = pytest.mark.django_db


def _oidc_only_user(email: str) -> User:
    user = User(email=email, display_name="OIDC only", password=None)
    user.save(force_insert=True)
    return user


def _link(user: User, provider: str = "peer", subject: str | None = None) -> OAuthProvider:
    return OAuthProvider.objects.create(
        user=user, provider=provider, provider_user_id=subject or f"{provider}-{user.pk}",
        access_token_encrypted=provider_token_encrypt("an-access-token"),
        refresh_token_encrypted=provider_token_encrypt("a-refresh-token"),
    )


def test_links_are_listed_without_tokens(as_user, django_assert_num_queries):
    user = make_user()
    first, second = _link(user, "peer"), _link(user, "other")
    _link(make_user(), "peer")  # someone else's
    client = as_user(user)

    response = client.get("/api/v1/me/providers")

    assert response.status_code == 200
    rows = response.json()["results"]
    assert [row["link_id"] for row in rows] == [first.pk, second.pk]
    assert set(rows[0]) == {"link_id", "provider", "subject", "created"}
    assert b"token" not in response.content
    with django_assert_num_queries(3):  # the user (authentication), the count, the page
        client.get("/api/v1/me/providers")


def test_a_user_with_a_password_may_unlink_the_only_provider(as_user):
    user = make_user()
    link = _link(user)

    response = as_user(user).delete(f"/api/v1/me/providers/{link.pk}")

    assert response.status_code == 204
    assert not OAuthProvider.objects.filter(pk=link.pk).exists()
    audit = AuditLog.objects.get(event_type="oauth_provider_unlinked")
    assert (audit.actor_user_id, audit.target_id, audit.metadata) == (user.pk, str(link.pk), {"provider": "peer"})


def test_the_last_way_in_cannot_be_unlinked(as_user):
    user = _oidc_only_user("only-way@example.test")
    link = _link(user)

    response = as_user(user).delete(f"/api/v1/me/providers/{link.pk}")

    assert response.status_code == 409
    assert response.json()["error"]["code"] == "conflict"
    assert OAuthProvider.objects.filter(pk=link.pk).exists()


def test_one_of_two_providers_can_be_unlinked_without_a_password(as_user):
    user = _oidc_only_user("two-ways@example.test")
    first, second = _link(user, "peer"), _link(user, "other")
    client = as_user(user)

    assert client.delete(f"/api/v1/me/providers/{first.pk}").status_code == 204
    assert client.delete(f"/api/v1/me/providers/{second.pk}").status_code == 409
    assert list(OAuthProvider.objects.filter(user=user).values_list("pk", flat=True)) == [second.pk]


def test_another_users_link_is_404(as_user):
    other_link = _link(make_user())

    response = as_user(make_user()).delete(f"/api/v1/me/providers/{other_link.pk}")

    assert response.status_code == 404
    assert OAuthProvider.objects.filter(pk=other_link.pk).exists()


def test_api_keys_cannot_unlink(as_key):
    user = make_user()
    link = _link(user)

    response = as_key(user, ["meetings:read"]).delete(f"/api/v1/me/providers/{link.pk}")

    assert response.status_code == 403
    assert OAuthProvider.objects.filter(pk=link.pk).exists()


@pytest.mark.django_db(transaction=True)
def test_two_unlinks_at_once_leave_one_way_in():
    user = _oidc_only_user("racing@example.test")
    links = [_link(user, "peer").pk, _link(user, "other").pk]
    lock = threading.Lock()

    def unlink_one() -> str:
        with lock:
            link_id = links.pop()
        try:
            oauth_provider_unlink(user_id=user.pk, link_id=link_id)
        except Conflict:
            return "refused"
        return "unlinked"

    assert sorted(run_twice_at_once(unlink_one)) == ["refused", "unlinked"]
    assert OAuthProvider.objects.filter(user=user).count() == 1
