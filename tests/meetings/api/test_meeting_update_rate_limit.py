"""Meeting PATCH is rate limited per principal (RATE_LIMIT_MEETING_UPDATE_PER_PRINCIPAL per
RATE_LIMIT_WINDOW_SECONDS): 429 with Retry-After over the limit, and the refused change is not applied."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from meetings.models import Meeting
from tests.factories import make_meeting
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def long_windows(settings):
    # A window boundary inside the test would restart the counter.
    settings.RATE_LIMIT_WINDOW_SECONDS = 3600


def test_meeting_patch_is_limited_per_principal(as_user, as_key, host, settings):
    settings.RATE_LIMIT_MEETING_UPDATE_PER_PRINCIPAL = 3
    meeting = make_meeting(host=host)
    url = f"/api/v1/meetings/{meeting.pk}"
    client = as_user(host)
    for number in range(3):
        assert client.patch(url, {"display_name": f"n{number}"}, format="json").status_code == 200
    refused = client.patch(url, {"display_name": "refused"}, format="json")
    assert_error(refused, 429, "throttled")
    assert 1 <= int(refused["Retry-After"]) <= django_settings.RATE_LIMIT_WINDOW_SECONDS
    assert Meeting.objects.get(pk=meeting.pk).display_name == "n2"
    # Reads are not counted; the host's API key is its own principal with its own budget.
    assert client.get(url).status_code == 200
    key = as_key(host, ["meetings:read", "meetings:write"])
    assert key.patch(url, {"display_name": "by key"}, format="json").status_code == 200


def test_a_refused_patch_of_someone_elses_meeting_still_counts(as_user, host, other, settings):
    # Probing other meetings' settings is limited like changing one's own.
    settings.RATE_LIMIT_MEETING_UPDATE_PER_PRINCIPAL = 2
    meeting = make_meeting(host=host)
    client = as_user(other)
    for _ in range(2):
        assert_error(client.patch(f"/api/v1/meetings/{meeting.pk}", {"display_name": "x"}, format="json"),
                     403, "permission_denied")
    assert_error(client.patch(f"/api/v1/meetings/{meeting.pk}", {"display_name": "x"}, format="json"),
                 429, "throttled")
