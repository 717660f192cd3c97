"""One time format in the whole admin, 24-hour with seconds, in UTC: lists, change pages and the fleet
timeline read alike ("2026-03-01 17:04:05"), never "March 1, 2026, 5:04 p.m."."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.urls import reverse

from controllers.models import HealthTransition
from tests.factories import make_controller

pytestmark = pytest.mark.django_db

AFTERNOON = datetime(2026, 3, 1, 17, 4, 5, tzinfo=UTC)


def test_a_change_page_shows_times_in_24_hours_with_seconds(client, superuser):
    controller = make_controller(region="us-east-1", last_heartbeat_at=AFTERNOON)
    client.force_login(superuser)
    page = client.get(reverse("admin:controllers_meetingcontroller_change", args=[controller.pk])).content.decode()
    assert "2026-03-01 17:04:05" in page
    assert "p.m." not in page and "a.m." not in page


def test_a_list_shows_times_in_24_hours_with_seconds(client, superuser):
    HealthTransition.objects.create(
        component_type="controller", component_id="mc-1", region="us-east-1", from_status="pending",
        to_status="healthy", reason="heartbeat", actor_type="system", created_at=AFTERNOON,
    )
    client.force_login(superuser)
    page = client.get(reverse("admin:controllers_healthtransition_changelist")).content.decode()
    assert "2026-03-01 17:04:05" in page
    assert "p.m." not in page and "a.m." not in page
