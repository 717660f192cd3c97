"""The names each member kind goes by in audit rows, outbox events and transitions: kept for compatibility."""

from __future__ import annotations

from controllers.members import CONTROLLERS, HANDLERS, MEMBER_KINDS
from controllers.models import ComponentType


def test_controllers_keep_their_event_and_audit_names():
    assert (CONTROLLERS.table, CONTROLLERS.pk) == ("meeting_controllers", "controller_id")
    assert CONTROLLERS.component_type == ComponentType.CONTROLLER == "controller"
    assert CONTROLLERS.target_type == "meeting_controller"
    assert CONTROLLERS.aggregate_type == "controller"
    assert CONTROLLERS.event("unhealthy") == "controller_unhealthy"
    assert CONTROLLERS.label == "meeting controller"


def test_handlers_keep_their_event_and_audit_names():
    assert (HANDLERS.table, HANDLERS.pk) == ("media_handlers", "handler_id")
    assert HANDLERS.component_type == ComponentType.HANDLER == "handler"
    assert HANDLERS.target_type == "media_handler"
    assert HANDLERS.aggregate_type == "media_handler"
    assert HANDLERS.event("unhealthy") == "media_handler_unhealthy"
    assert HANDLERS.label == "media handler"


def test_every_transition_component_type_has_one_kind():
    assert sorted(kind.component_type for kind in MEMBER_KINDS) == sorted(ComponentType.values)
