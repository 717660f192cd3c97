"""The fleet reads show the load placement judges: reported meetings plus those assigned since (in-flight)."""

from __future__ import annotations

import pytest

from controllers.selectors import controllers_live_status, fleet_summary_by_region
from tests.factories import make_controller

pytestmark = pytest.mark.django_db


def test_the_region_summary_counts_meetings_in_flight():
    make_controller(region="eu-west-1", max_meetings=10, current_meetings=3, assigned_since_heartbeat=2)
    make_controller(region="eu-west-1", max_meetings=10, current_meetings=1)

    [summary] = fleet_summary_by_region()

    meetings = summary.controllers.capacities["meetings"]
    assert (meetings.used, meetings.total, meetings.percent) == (6, 20, 30)


def test_the_live_status_carries_in_flight_reservations_and_the_hold_down():
    controller = make_controller(assigned_since_heartbeat=4, reserved_participants=250)

    [row] = controllers_live_status([controller.controller_id])

    assert (row["current_meetings"], row["assigned_since_heartbeat"], row["reserved_participants"]) == (0, 4, 250)
    assert row["hold_down_until"] is None and row["drain_deadline"] is None
