"""The fleet dashboard: summary, columns, live endpoint, actions through the confirmation page, permissions."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from audit.models import AuditLog, OutboxEvent
from controllers.models import HealthStatus, HealthTransition, MediaHandler, MeetingController
from controllers.selectors import fleet_summary_by_region
from meetings.models import MeetingAssignment
from tests.factories import make_controller, make_handler, make_meeting

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:controllers_meetingcontroller_changelist"
LIVE = "admin:controllers_meetingcontroller_live"


def test_summary_aggregates_per_region():
    make_controller(region="eu-west-1", health=HealthStatus.HEALTHY, current_meetings=10, max_meetings=100,
                    current_participants=50, max_participants=1000)
    make_controller(region="eu-west-1", health=HealthStatus.DRAINING, current_meetings=30, max_meetings=100)
    make_controller(region="us-east-1", health=HealthStatus.UNHEALTHY, current_meetings=5, max_meetings=50)
    make_handler(region="us-east-1", health=HealthStatus.HEALTHY, current_streams=10, max_streams=40)

    summary = {s.region: s for s in fleet_summary_by_region()}

    eu, us = summary["eu-west-1"], summary["us-east-1"]
    assert eu.controllers.count == 2
    assert eu.controllers.by_health["healthy"] == 1 and eu.controllers.by_health["draining"] == 1
    # The draining MC's meetings and capacity count in the total only (placement gives it no new meeting).
    meetings = eu.controllers.capacities["meetings"]
    assert (meetings.used, meetings.placeable, meetings.total) == (10, 100, 200)
    assert meetings.percent == 10
    assert eu.handlers.count == 0
    assert us.controllers.by_health["unhealthy"] == 1
    assert us.handlers.capacities["streams"].percent == 25


def test_changelist_shows_summary_badges_and_stale_ages(client, viewer_user):
    fresh = make_controller(region="eu-west-1", health=HealthStatus.HEALTHY)
    stale = make_controller(region="eu-west-1", health=HealthStatus.UNHEALTHY)
    MeetingController.objects.filter(pk=stale.pk).update(last_heartbeat_at=stale.last_heartbeat_at.replace(year=2020))
    client.force_login(viewer_user)

    response = client.get(reverse(CHANGELIST))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'id="dt-fleet-summary"' in html and 'data-region="eu-west-1"' in html
    assert f'class="dt-health dt-health-healthy" data-id="{fresh.pk}"' in html
    assert f'class="dt-age dt-stale" data-id="{stale.pk}"' in html
    assert f'class="dt-age" data-id="{fresh.pk}"' in html
    # A viewer gets no operator action.
    assert "drain_action" not in html


def test_live_endpoint_returns_rows_on_screen(client, viewer_user):
    first = make_controller(health=HealthStatus.HEALTHY)
    make_controller(health=HealthStatus.DEGRADED)
    client.force_login(viewer_user)

    response = client.get(reverse(LIVE), {"ids": f"{first.pk},missing"})

    assert response.status_code == 200
    items = response.json()["items"]
    assert [item["id"] for item in items] == [first.pk]
    assert items[0]["health_status"] == "healthy"
    assert 0 <= items[0]["heartbeat_age_seconds"] < 60


def test_live_endpoint_requires_view_permission(client, db):
    from tests.factories import make_user

    staff = make_user(is_staff=True)
    client.force_login(staff)

    assert client.get(reverse(LIVE), {"ids": "x"}).status_code == 403


def test_operator_drains_through_confirmation_page(client, operator_user):
    controller = make_controller(health=HealthStatus.HEALTHY)
    client.force_login(operator_user)
    url = reverse(CHANGELIST)
    form = {"action": "drain_action", "_selected_action": [controller.pk]}

    confirm = client.post(url, form)

    assert confirm.status_code == 200
    assert b"Drain controllers" in confirm.content and b'name="deadline_seconds"' in confirm.content
    controller.refresh_from_db()
    assert controller.health_status == HealthStatus.HEALTHY  # nothing happens before confirmation

    done = client.post(url, {**form, "post": "yes", "deadline_seconds": "600"})

    assert done.status_code == 302
    controller.refresh_from_db()
    assert controller.health_status == HealthStatus.DRAINING
    assert controller.drain_deadline is not None
    audit = AuditLog.objects.filter(event_type="controller_drain_started", target_id=controller.pk).get()
    assert audit.actor_user_id == operator_user.pk
    transition = HealthTransition.objects.filter(component_id=controller.pk, to_status="draining").get()
    assert transition.actor_user_id == operator_user.pk


def test_viewer_cannot_drain(client, viewer_user):
    controller = make_controller(health=HealthStatus.HEALTHY)
    client.force_login(viewer_user)

    response = client.post(
        reverse(CHANGELIST), {"action": "drain_action", "_selected_action": [controller.pk], "post": "yes"}
    )

    # Django refuses an action the user may not run (it is not among the choices): no confirmation, no change.
    assert response.status_code in (200, 302)
    assert b"Drain controllers" not in response.content
    controller.refresh_from_db()
    assert controller.health_status == HealthStatus.HEALTHY
    assert not AuditLog.objects.filter(event_type="controller_drain_started").exists()


def test_operator_undrain_mark_unhealthy_and_end_assignments(client, operator_user):
    draining = make_controller(health=HealthStatus.HEALTHY)
    other = make_controller(health=HealthStatus.HEALTHY)
    client.force_login(operator_user)
    url = reverse(CHANGELIST)

    def run(action, pk, **extra):
        return client.post(url, {"action": action, "_selected_action": [pk], "post": "yes", **extra})

    run("drain_action", draining.pk)
    run("undrain_action", draining.pk)
    run("mark_unhealthy_action", other.pk)
    response = run("end_assignments_action", other.pk)

    assert response.status_code == 302
    draining.refresh_from_db()
    other.refresh_from_db()
    assert draining.health_status == HealthStatus.PENDING
    assert other.health_status == HealthStatus.UNHEALTHY
    events = set(AuditLog.objects.filter(actor_user_id=operator_user.pk).values_list("event_type", flat=True))
    assert {
        "controller_drain_started", "controller_undrained", "controller_unhealthy", "controller_assignments_ended",
    } <= events
    undrained = AuditLog.objects.get(event_type="controller_undrained", target_id=draining.pk)
    assert undrained.actor_user_id == operator_user.pk
    assert undrained.metadata == {"from_status": "draining", "to_status": "pending"}


def test_conflict_becomes_a_message(client, operator_user):
    controller = make_controller(health=HealthStatus.HEALTHY)
    client.force_login(operator_user)

    response = client.post(
        reverse(CHANGELIST),
        {"action": "undrain_action", "_selected_action": [controller.pk], "post": "yes"}, follow=True,
    )

    assert response.status_code == 200
    messages = [str(m) for m in response.context["messages"]]
    assert any(controller.pk in m for m in messages)
    controller.refresh_from_db()
    assert controller.health_status == HealthStatus.HEALTHY


def test_change_page_is_read_only_with_timeline(client, operator_user):
    controller = make_controller(health=HealthStatus.HEALTHY)
    client.force_login(operator_user)
    client.post(reverse(CHANGELIST), {"action": "drain_action", "_selected_action": [controller.pk], "post": "yes"})

    response = client.get(reverse("admin:controllers_meetingcontroller_change", args=[controller.pk]))

    assert response.status_code == 200
    html = response.content.decode()
    assert 'class="dt-timeline"' in html and "operator" in html
    assert 'name="_save"' not in html
    assert 'name="max_meetings"' not in html


def test_admin_index_links_the_dashboard(client, viewer_user):
    client.force_login(viewer_user)

    response = client.get(reverse("admin:index"))

    assert 'id="dt-dashboard-link"' in response.content.decode()
    assert reverse(CHANGELIST) in response.content.decode()


def test_media_handler_dashboard(client, viewer_user):
    handler = make_handler(region="ap-south-1", health=HealthStatus.DEGRADED)
    client.force_login(viewer_user)

    page = client.get(reverse("admin:controllers_mediahandler_changelist"))
    live = client.get(reverse("admin:controllers_mediahandler_live"), {"ids": handler.pk})

    assert page.status_code == 200
    assert f'data-id="{handler.pk}"' in page.content.decode()
    assert live.json()["items"][0]["health_status"] == "degraded"


def _transition(controller, *, to_status, minutes_ago, reason="stale", from_status="healthy"):
    return HealthTransition.objects.create(
        component_type="controller", component_id=controller.pk, region=controller.region, from_status=from_status,
        to_status=to_status, reason=reason, actor_type="system",
        created_at=timezone.now() - timedelta(minutes=minutes_ago),
    )


def test_dashboard_lists_last_hour_transitions_per_region(client, viewer_user, django_assert_num_queries):
    eu = make_controller(region="eu-west-1", controller_id="mc-eu-timeline")
    us = make_controller(region="us-east-1", controller_id="mc-us-timeline")
    _transition(eu, to_status="unhealthy", minutes_ago=5)
    _transition(us, to_status="degraded", minutes_ago=10, reason="heartbeat")
    _transition(us, to_status="draining", minutes_ago=90, reason="operator")  # older than the hour
    # A hold (sweep-gap: from = to) is not a change of state.
    _transition(eu, from_status="unhealthy", to_status="unhealthy", minutes_ago=1, reason="sweep-gap")
    client.force_login(viewer_user)

    with django_assert_num_queries(11):
        html = client.get(reverse(CHANGELIST)).content.decode()

    eu_card = html.split('data-region="eu-west-1"')[1].split("</section>")[0]
    us_card = html.split('data-region="us-east-1"')[1].split("</section>")[0]
    assert eu_card.count('class="dt-transition"') == 1
    assert "mc-eu-timeline</a> healthy &rarr;" in eu_card and "dt-health-unhealthy" in eu_card and "stale" in eu_card
    assert us_card.count('class="dt-transition"') == 1
    assert "<em>heartbeat</em>" in us_card and "draining</span>" not in us_card
    assert reverse("admin:controllers_meetingcontroller_change", args=[eu.pk]) in eu_card


def test_dashboard_timeline_is_bounded_per_region(client, viewer_user):
    controller = make_controller(region="eu-west-1")
    HealthTransition.objects.bulk_create(
        HealthTransition(component_type="controller", component_id=controller.pk, region="eu-west-1",
                         from_status="healthy" if n % 2 else "unhealthy",
                         to_status="unhealthy" if n % 2 else "healthy", reason="stale", actor_type="system",
                         created_at=timezone.now() - timedelta(seconds=n))
        for n in range(80)
    )
    client.force_login(viewer_user)

    html = client.get(reverse(CHANGELIST)).content.decode()

    card = html.split('data-region="eu-west-1"')[1].split("</section>")[0]
    assert card.count('class="dt-transition"') == 50
    assert "80 health transitions in the last hour (latest 50 shown)" in card


def test_draining_controller_shows_deadline_and_remaining_meetings(client, operator_user):
    draining = make_controller(region="eu-west-1", health=HealthStatus.HEALTHY)
    for _ in range(2):
        MeetingAssignment.objects.create(meeting=make_meeting(), meeting_controller=draining,
                                         region=draining.region, assigned_by_gc_id="gc-test")
    idle = make_controller(region="eu-west-1", health=HealthStatus.HEALTHY)
    self_drained = make_controller(region="eu-west-1", health=HealthStatus.DRAINING)  # reported it, no deadline
    client.force_login(operator_user)
    client.post(reverse(CHANGELIST), {"action": "drain_action", "_selected_action": [draining.pk], "post": "yes",
                                      "deadline_seconds": "1800"})
    draining.refresh_from_db()

    html = client.get(reverse(CHANGELIST)).content.decode()

    cell = html.split(f'class="dt-drain" data-id="{draining.pk}">')[1].split("</span>")[0]
    assert cell == f"until {timezone.localtime(draining.drain_deadline):%Y-%m-%d %H:%M:%S}; 2 active"
    assert f'class="dt-drain" data-id="{idle.pk}">-</span>' in html
    assert f'class="dt-drain" data-id="{self_drained.pk}">self-reported, no deadline; 0 active</span>' in html


def test_change_page_timeline_costs_the_same_for_many_transitions(client, viewer_user):
    controller = make_controller()
    _transition(controller, to_status="unhealthy", minutes_ago=300)
    client.force_login(viewer_user)
    url = reverse("admin:controllers_meetingcontroller_change", args=[controller.pk])
    client.get(url)  # per-process caches (content types) filled
    with CaptureQueriesContext(connection) as few:
        client.get(url)
    for minutes in range(40):
        _transition(controller, to_status="degraded", minutes_ago=minutes + 5, reason="heartbeat")

    with CaptureQueriesContext(connection) as many:
        html = client.get(url).content.decode()

    assert len(many) == len(few)
    timeline = html.split('class="dt-timeline"')[1].split("</ol>")[0]
    assert timeline.count("<li>") == 20  # the newest 20
    assert "unhealthy" not in timeline  # the oldest one fell off the end


def test_operator_drains_undrains_and_marks_media_handlers(client, operator_user):
    drained = make_handler(region="eu-west-1", health=HealthStatus.HEALTHY)
    failing = make_handler(region="eu-west-1", health=HealthStatus.DEGRADED)
    client.force_login(operator_user)
    url = reverse("admin:controllers_mediahandler_changelist")

    def run(action, pk, **extra):
        return client.post(url, {"action": action, "_selected_action": [pk], **extra}, follow=True)

    confirm = run("drain_action", drained.pk)
    assert b"Drain media handlers" in confirm.content
    assert MediaHandler.objects.get(pk=drained.pk).health_status == HealthStatus.HEALTHY
    run("drain_action", drained.pk, post="yes")
    assert MediaHandler.objects.get(pk=drained.pk).health_status == HealthStatus.DRAINING
    run("undrain_action", drained.pk, post="yes")
    run("mark_unhealthy_action", failing.pk, post="yes")
    refused = run("undrain_action", failing.pk, post="yes")

    assert MediaHandler.objects.get(pk=drained.pk).health_status == HealthStatus.PENDING
    assert MediaHandler.objects.get(pk=failing.pk).health_status == HealthStatus.UNHEALTHY
    assert any(failing.pk in str(m) and "unhealthy" in str(m) for m in refused.context["messages"])
    transitions = HealthTransition.objects.filter(component_type="handler", reason="operator").order_by("id")
    assert [(t.component_id, t.from_status, t.to_status) for t in transitions] == [
        (drained.pk, "healthy", "draining"), (drained.pk, "draining", "pending"), (failing.pk, "degraded", "unhealthy"),
    ]
    assert {t.actor_user_id for t in transitions} == {operator_user.pk}
    audits = AuditLog.objects.filter(target_type="media_handler").order_by("id")
    assert [(a.event_type, a.target_id, a.actor_user_id) for a in audits] == [
        ("media_handler_drain", drained.pk, operator_user.pk),
        ("media_handler_undrain", drained.pk, operator_user.pk),
        ("media_handler_mark_unhealthy", failing.pk, operator_user.pk),
    ]
    assert OutboxEvent.objects.filter(
        aggregate_type="media_handler", aggregate_id=failing.pk, event_type="media_handler_unhealthy"
    ).count() == 1


def test_viewer_gets_no_media_handler_actions(client, viewer_user):
    handler = make_handler(health=HealthStatus.HEALTHY)
    client.force_login(viewer_user)
    url = reverse("admin:controllers_mediahandler_changelist")

    html = client.get(url).content.decode()
    client.post(url, {"action": "drain_action", "_selected_action": [handler.pk], "post": "yes"})

    assert "drain_action" not in html
    assert MediaHandler.objects.get(pk=handler.pk).health_status == HealthStatus.HEALTHY


def test_meetings_bar_counts_assignments_in_flight(client, viewer_user):
    busy = make_controller(current_meetings=10, max_meetings=100)
    MeetingController.objects.filter(pk=busy.pk).update(assigned_since_heartbeat=5)
    client.force_login(viewer_user)

    html = client.get(reverse(CHANGELIST)).content.decode()

    bar = html.split(f'class="dt-bar dt-meetings" data-id="{busy.pk}"')[1].split("</div></div>")[0]
    assert 'title="15 / 100 (15%)"' in bar
