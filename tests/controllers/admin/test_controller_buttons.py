"""A controller's page has drain, undrain and mark-unhealthy buttons: each posts the fleet list's action for
that one controller, so it asks the same confirmation, needs the same permission and writes the same audit
row as the action."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditLog
from controllers.models import MeetingController
from tests.factories import make_controller
from tests.fixtures.admin import fleet_change_page, object_action_buttons

pytestmark = pytest.mark.django_db

MODEL = "meetingcontroller"
CHANGELIST = f"admin:controllers_{MODEL}_changelist"
BUTTONS = ("drain_action", "undrain_action", "mark_unhealthy_action")


def _page(client, controller) -> str:
    return fleet_change_page(client, MODEL, controller.pk)


def _buttons(html: str) -> list[str]:
    return object_action_buttons(html, model=MODEL)


def test_an_operator_gets_the_three_buttons_a_viewer_none(client, operator_user, viewer_user):
    controller = make_controller(region="us-east-1")
    client.force_login(operator_user)
    html = _page(client, controller)
    assert _buttons(html) == list(BUTTONS)
    assert all(f">{label}</button>" in html for label in ("Drain", "Undrain", "Mark unhealthy"))
    assert f'name="_selected_action" value="{controller.pk}"' in html
    client.force_login(viewer_user)
    assert _buttons(_page(client, controller)) == []


def test_the_drain_button_confirms_then_drains_with_an_audit_row(client, operator_user):
    controller = make_controller(region="us-east-1")
    client.force_login(operator_user)
    form = {"action": "drain_action", "_selected_action": [controller.pk]}

    confirm = client.post(reverse(CHANGELIST), form)
    assert confirm.status_code == 200 and "Drain controllers" in confirm.content.decode()
    assert MeetingController.objects.get(pk=controller.pk).health_status == "healthy"

    done = client.post(reverse(CHANGELIST), {**form, "post": "yes", "deadline_seconds": "600"})
    assert done.status_code == 302
    assert MeetingController.objects.get(pk=controller.pk).health_status == "draining"
    assert AuditLog.objects.filter(
        event_type="controller_drain_started", target_id=controller.pk, actor_user_id=operator_user.pk
    ).exists()


def test_the_mark_unhealthy_button_marks_it_unhealthy_with_an_audit_row(client, operator_user):
    controller = make_controller(region="us-east-1")
    client.force_login(operator_user)
    _page(client, controller)
    client.post(reverse(CHANGELIST), {"action": "mark_unhealthy_action", "_selected_action": [controller.pk],
                                      "post": "yes"})
    assert MeetingController.objects.get(pk=controller.pk).health_status == "unhealthy"
    assert AuditLog.objects.filter(event_type="controller_unhealthy", target_id=controller.pk).exists()
