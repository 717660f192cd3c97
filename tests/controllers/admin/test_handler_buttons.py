"""A media handler's page has drain, undrain and mark-unhealthy buttons, as a controller's has: each posts the
fleet list's action for that one handler, so it asks the same confirmation, needs the same permission and calls
the same service (one compare-and-set, a transition and an audit row naming the operator)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from audit.models import AuditLog
from controllers.models import HealthStatus, HealthTransition, MediaHandler
from tests.factories import make_handler
from tests.fixtures.admin import fleet_change_page, object_action_buttons

pytestmark = pytest.mark.django_db

MODEL = "mediahandler"
CHANGELIST = f"admin:controllers_{MODEL}_changelist"
BUTTONS = ("drain_action", "undrain_action", "mark_unhealthy_action")


def _page(client, handler) -> str:
    return fleet_change_page(client, MODEL, handler.pk)


def _buttons(html: str) -> list[str]:
    return object_action_buttons(html, model=MODEL)


def test_an_operator_gets_the_three_buttons_a_viewer_none(client, operator_user, viewer_user):
    handler = make_handler(region="us-east-1")
    client.force_login(operator_user)
    html = _page(client, handler)
    assert _buttons(html) == list(BUTTONS)
    assert all(f">{label}</button>" in html for label in ("Drain", "Undrain", "Mark unhealthy"))
    assert f'name="_selected_action" value="{handler.pk}"' in html
    client.force_login(viewer_user)
    assert _buttons(_page(client, handler)) == []


def test_the_drain_button_confirms_then_drains_with_an_audit_row(client, operator_user):
    handler = make_handler(region="us-east-1")
    client.force_login(operator_user)
    form = {"action": "drain_action", "_selected_action": [handler.pk]}

    confirm = client.post(reverse(CHANGELIST), form)
    assert confirm.status_code == 200 and "Drain media handlers" in confirm.content.decode()
    assert MediaHandler.objects.get(pk=handler.pk).health_status == HealthStatus.HEALTHY

    done = client.post(reverse(CHANGELIST), {**form, "post": "yes"})
    assert done.status_code == 302
    assert MediaHandler.objects.get(pk=handler.pk).health_status == HealthStatus.DRAINING
    assert AuditLog.objects.filter(
        event_type="media_handler_drain", target_id=handler.pk, actor_user_id=operator_user.pk
    ).exists()
    assert HealthTransition.objects.filter(
        component_id=handler.pk, to_status=HealthStatus.DRAINING, actor_user_id=operator_user.pk
    ).exists()


def test_the_undrain_and_mark_unhealthy_buttons_go_through_their_services(client, operator_user):
    handler = make_handler(region="us-east-1", health=HealthStatus.DRAINING)
    client.force_login(operator_user)

    def press(action: str) -> None:
        assert action in _buttons(_page(client, handler))
        client.post(reverse(CHANGELIST), {"action": action, "_selected_action": [handler.pk], "post": "yes"})

    press("undrain_action")
    assert MediaHandler.objects.get(pk=handler.pk).health_status == HealthStatus.PENDING
    press("mark_unhealthy_action")
    assert MediaHandler.objects.get(pk=handler.pk).health_status == HealthStatus.UNHEALTHY
    events = set(AuditLog.objects.filter(target_id=handler.pk, actor_user_id=operator_user.pk)
                 .values_list("event_type", flat=True))
    assert events == {"media_handler_undrain", "media_handler_mark_unhealthy"}
