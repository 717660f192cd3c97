"""Recording writes (start, update, share, unshare, rotate) share one budget per principal
(RATE_LIMIT_RECORDING_WRITE_PER_PRINCIPAL per RATE_LIMIT_WINDOW_SECONDS): 429 with Retry-After beyond it."""

from __future__ import annotations

import pytest
from django.conf import settings as django_settings

from meetings.models import Recording
from tests.factories import make_meeting, make_recording
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def long_windows(settings):
    # A fixed window that restarted mid-test would reset the counter.
    settings.RATE_LIMIT_WINDOW_SECONDS = 3600


def assert_throttled(response):
    assert_error(response, 429, "throttled")
    assert 1 <= int(response["Retry-After"]) <= django_settings.RATE_LIMIT_WINDOW_SECONDS


def test_recording_writes_share_one_budget_per_principal(as_user, as_key, host, other, settings):
    settings.RATE_LIMIT_RECORDING_WRITE_PER_PRINCIPAL = 5
    meeting = make_meeting(host=host, allow_recording=True)
    ready = make_recording(meeting=meeting, status="ready")
    client = as_user(host)
    writes = [
        lambda: client.post(f"/api/v1/meetings/{meeting.pk}/recordings", format="json"),
        lambda: client.patch(f"/api/v1/recordings/{ready.pk}", {"video_codec": "VP9"}, format="json"),
        lambda: client.post(f"/api/v1/recordings/{ready.pk}/share", format="json"),
        lambda: client.post(f"/api/v1/recordings/{ready.pk}/share/rotate", format="json"),
        lambda: client.post(f"/api/v1/recordings/{ready.pk}/unshare", format="json"),
    ]
    assert [write().status_code for write in writes] == [201, 409, 200, 200, 200]
    for write in writes:
        assert_throttled(write())
    assert Recording.objects.count() == 2 and not Recording.objects.get(pk=ready.pk).is_public
    # Reads are not limited by it; another user and the host's API key have budgets of their own.
    assert client.get(f"/api/v1/recordings/{ready.pk}").status_code == 200
    assert_error(as_user(other).post(f"/api/v1/recordings/{ready.pk}/share", format="json"), 403,
                 "permission_denied")
    key = as_key(host, ["recordings:read", "recordings:write"])
    assert key.post(f"/api/v1/recordings/{ready.pk}/share", format="json").status_code == 200
