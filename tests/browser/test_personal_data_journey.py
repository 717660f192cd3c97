"""A new user's whole life with their personal data, in a real headless Chromium against the live server and the
local OpenID provider: they sign in through the provider (the REST flow's pages), host and join a meeting, export
their data, and erase themselves. Afterwards nothing in the database names them; the audit rows of what they did
stay, with a NULL actor."""

from __future__ import annotations

import json

import pytest

from audit.models import AuditLog
from tests.browser import test_browser
from tests.browser.test_oidc_browser import _provider_pages, peer  # noqa: F401 (a fixture, found by its name)
from tests.factories import make_controller
from tests.fixtures.personal_data import tables_naming

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

chromium_path = test_browser.chromium_path
chromium = test_browser.chromium
page = test_browser.page

LOGIN = "journey-newcomer@example.test"
NAME = "Test journey-newcomer"  # the provider's `name` claim for this login (tests/peers/oidc/server.mjs)


def test_a_new_user_signs_in_exports_and_erases_themselves(page, live_server, peer, settings):  # noqa: F811
    settings.RATE_LIMIT_EXPORT_PER_PRINCIPAL = 100
    make_controller(region="us-east-1", controller_id="mc-journey")

    # Signed in through the provider's pages; our callback answers with our token.
    page.goto(f"{live_server.url}/api/v1/auth/oidc/peer/start")
    _provider_pages(page, LOGIN)
    page.wait_for_url(f"{live_server.url}/api/v1/auth/oidc/peer/callback?**")
    token = json.loads(page.locator("body").inner_text())["access_token"]
    auth = {"Authorization": f"Bearer {token}"}

    me = page.request.get(f"{live_server.url}/api/v1/me", headers=auth)
    assert me.status == 200 and me.json()["email"] == LOGIN
    user_id = me.json()["user_id"]
    created = page.request.post(f"{live_server.url}/api/v1/meetings", headers=auth,
                                data={"display_name": "Journey sync", "max_participants": 5})
    assert created.status == 201, created.text()
    joined = page.request.post(f"{live_server.url}/api/v1/meetings/{created.json()['meeting_code']}/join",
                               headers=auth, data={"region": "us-east-1"})
    assert joined.status == 201, joined.text()

    # The export: one JSON document with what the platform keeps about them, and no provider token.
    exported = page.request.get(f"{live_server.url}/api/v1/me/export", headers=auth)
    assert exported.status == 200, exported.text()
    document = exported.json()
    text = exported.text()
    assert LOGIN in text
    assert [link["provider"] for link in document["oauth_providers"]] == ["peer"]
    assert "token" not in json.dumps(document["oauth_providers"]).lower().replace("token_expires_at", "")
    assert [meeting["display_name"] for meeting in document["meetings_hosted"]] == ["Journey sync"]
    assert len(document["participations"]) == 1
    assert document["audit_events"]

    their_audit_rows = set(AuditLog.objects.filter(actor_user_id=user_id).values_list("id", flat=True))
    assert their_audit_rows
    needles = [LOGIN, NAME]
    assert set(tables_naming(needles)) == set(needles)  # the search finds them before

    # Erasure with a fresh sign-in (the token was issued a moment ago).
    erased = page.request.delete(f"{live_server.url}/api/v1/me", headers=auth)
    assert erased.status == 204, erased.text()

    assert tables_naming(needles) == {}
    kept = AuditLog.objects.filter(id__in=their_audit_rows)
    assert kept.count() == len(their_audit_rows)
    assert set(kept.values_list("actor_user_id", flat=True)) == {None}
    assert page.request.get(f"{live_server.url}/api/v1/me", headers=auth).status == 401
    test_browser._screenshot(page, "personal_data_journey_erased")
