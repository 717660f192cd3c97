"""The fleet dashboard's capacity bars count what placement can use (a member in a state that receives new work
with a fresh beat, the rule placement itself applies) and say the whole fleet's capacity beside it: unhealthy,
draining, pending or silent members never make a region look used or free."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from controllers.models import HealthStatus, MediaHandler, MeetingController
from controllers.selectors import fleet_summary_by_region
from tests.factories import make_controller, make_handler

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:controllers_meetingcontroller_changelist"


def _silent(model, pk) -> None:
    """A beat older than the staleness threshold, before the sweep has judged it."""
    stale = timezone.now() - timedelta(seconds=settings.HEARTBEAT_STALE_THRESHOLD_SECONDS + 60)
    model.objects.filter(pk=pk).update(last_heartbeat_at=stale)


def _bar(html: str, region: str, capacity: str) -> dict[str, str]:
    section = html.split(f'data-region="{region}"')[1].split("</section>")[0]
    pattern = rf'<div class="dt-util" data-capacity="{capacity}".*?<span class="dt-total">[^<]*</span>'
    row = re.search(pattern, section, re.S)
    assert row, f"no {capacity} bar in {region}"
    attributes = dict(re.findall(r'data-(used|placeable|total)="(\d+)"', row[0]))
    text = re.sub(r"<[^>]+>", " ", row[0])
    return {**attributes, "text": " ".join(text.split())}


def test_a_region_without_a_healthy_controller_has_nothing_placeable(client, viewer_user):
    # What showed 54 % used: an unhealthy MC's meetings counted against the region's capacity.
    make_controller(region="us-east-1", health=HealthStatus.UNHEALTHY, current_meetings=54, max_meetings=60)
    make_controller(region="us-east-1", health=HealthStatus.DRAINING, current_meetings=0, max_meetings=40,
                    current_participants=10, max_participants=400)

    [summary] = fleet_summary_by_region()

    meetings = summary.controllers.capacities["meetings"]
    assert (meetings.used, meetings.placeable, meetings.total) == (0, 0, 100)
    assert summary.controllers.placeable == 0
    client.force_login(viewer_user)
    html = client.get(reverse(CHANGELIST)).content.decode()
    bar = _bar(html, "us-east-1", "meetings")
    assert (bar["used"], bar["placeable"], bar["total"]) == ("0", "0", "100")
    assert "0 / 0 placeable of 100 total" in bar["text"]
    assert "54" not in bar["text"]
    assert _bar(html, "us-east-1", "participants")["total"] == "1400"


def test_a_mixed_region_counts_only_fresh_members_in_placeable_states(client, viewer_user):
    region = "eu-west-1"
    make_controller(region=region, health=HealthStatus.HEALTHY, current_meetings=8, assigned_since_heartbeat=2,
                    max_meetings=100, current_participants=80, max_participants=1000)
    make_controller(region=region, health=HealthStatus.DEGRADED, current_meetings=5, max_meetings=50,
                    current_participants=20, max_participants=500)
    silent = make_controller(region=region, health=HealthStatus.HEALTHY, current_meetings=20, max_meetings=100)
    _silent(MeetingController, silent.pk)
    make_controller(region=region, health=HealthStatus.DRAINING, current_meetings=30, max_meetings=100)
    make_controller(region=region, health=HealthStatus.UNHEALTHY, current_meetings=40, max_meetings=100)
    make_controller(region=region, health=HealthStatus.PENDING, max_meetings=100)
    # Media handlers: placement takes healthy ones with a fresh report only.
    make_handler(region=region, health=HealthStatus.HEALTHY, current_streams=10, max_streams=40)
    make_handler(region=region, health=HealthStatus.DEGRADED, current_streams=5, max_streams=100)
    quiet = make_handler(region=region, health=HealthStatus.HEALTHY, current_streams=7, max_streams=60)
    _silent(MediaHandler, quiet.pk)

    [summary] = fleet_summary_by_region()

    meetings = summary.controllers.capacities["meetings"]
    assert (meetings.used, meetings.placeable, meetings.total, meetings.percent) == (15, 150, 550, 10)
    participants = summary.controllers.capacities["participants"]
    assert (participants.used, participants.placeable) == (100, 1500)
    assert (summary.controllers.count, summary.controllers.placeable) == (6, 2)
    streams = summary.handlers.capacities["streams"]
    assert (streams.used, streams.placeable, streams.total, streams.percent) == (10, 40, 200, 25)
    assert (summary.handlers.count, summary.handlers.placeable) == (3, 1)

    client.force_login(viewer_user)
    html = client.get(reverse(CHANGELIST)).content.decode()
    bar = _bar(html, region, "meetings")
    assert (bar["used"], bar["placeable"], bar["total"]) == ("15", "150", "550")
    assert "15 / 150 placeable of 550 total" in bar["text"]
    streams_bar = _bar(html, region, "streams")
    assert (streams_bar["used"], streams_bar["placeable"], streams_bar["total"]) == ("10", "40", "200")
    assert "2 of 6 placeable" in html and "1 of 3 placeable" in html
