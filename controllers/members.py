"""Members: the meeting controllers (MCs) and media handlers (MHs) of the fleet, and the names each kind goes by.

A member is an MC or an MH. Both kinds register, beat, change health the same way and live in one table each;
`MemberKind` describes a kind by every name the code, the SQL, the audit trail and the outbox need, so that code
handling "a member" takes one `kind` argument instead of an if per table.

Names in audit rows and outbox events (kept as they are for compatibility: consumers of the outbox and readers of
the audit trail may match on them):

| kind        | table               | transitions' component_type | audit target_type  | outbox aggregate_type |
|-------------|---------------------|-----------------------------|--------------------|-----------------------|
| CONTROLLERS | meeting_controllers | controller                  | meeting_controller | controller            |
| HANDLERS    | media_handlers      | handler                     | media_handler      | media_handler         |

Every member event (audit and outbox event_type) is `<aggregate_type>_<what>` (`MemberKind.event`):
`_registered`, `_reregistered`, `_<health state>` (a beat that moved it), `_unhealthy` (sweep, operator, drain
deadline), `_claimed`, `_transferred`, `_access_denied`, and for controllers `_draining` / `_undrained`.
"""

from __future__ import annotations

from dataclasses import dataclass

from controllers.models import AVAILABLE_STATES, HANDLER_AVAILABLE_STATES, ComponentType


@dataclass(frozen=True)
class MemberKind:
    """One of the two member tables. Constants only: these names are formatted into SQL."""

    table: str
    pk: str
    # controller_health_transitions.component_type
    component_type: str
    # audit_logs.target_type
    target_type: str
    # outbox_events.aggregate_type, and the prefix of the member's event names (audit and outbox)
    aggregate_type: str
    # The columns a beat writes: (column, PostgreSQL element type); a NULL value leaves the column unchanged.
    beat_columns: tuple[tuple[str, str], ...]
    # The states whose members placement gives new meetings (controllers.health_rules.placeable_sql).
    placeable_states: tuple[str, ...]

    def event(self, what: str) -> str:
        """The name of a member event of this kind, e.g. CONTROLLERS.event("unhealthy") == "controller_unhealthy"."""
        return f"{self.aggregate_type}_{what}"

    @property
    def label(self) -> str:
        """The kind in words, for error messages: "meeting controller", "media handler"."""
        return self.target_type.replace("_", " ")


CONTROLLERS = MemberKind(
    table="meeting_controllers", pk="controller_id", component_type=ComponentType.CONTROLLER.value,
    target_type="meeting_controller", aggregate_type="controller",
    beat_columns=(
        ("current_meetings", "integer"), ("current_participants", "integer"),
        ("max_meetings", "integer"), ("max_participants", "integer"),
        ("cpu_usage_percent", "double precision"), ("memory_usage_percent", "double precision"),
    ),
    placeable_states=AVAILABLE_STATES,
)
HANDLERS = MemberKind(
    table="media_handlers", pk="handler_id", component_type=ComponentType.HANDLER.value,
    target_type="media_handler", aggregate_type="media_handler",
    beat_columns=(
        ("current_streams", "integer"), ("cpu_usage_percent", "double precision"),
        ("memory_usage_percent", "double precision"), ("bandwidth_usage_percent", "double precision"),
    ),
    placeable_states=HANDLER_AVAILABLE_STATES,
)
MEMBER_KINDS = (CONTROLLERS, HANDLERS)


@dataclass(frozen=True)
class HealthChange:
    """What a write did to one member's health: its state before and after (equal when only its beat columns or
    counters moved). Returned by beats, the recovery gate, operators' and the drain's transitions."""

    member_id: str
    region: str
    from_status: str
    to_status: str

    @property
    def changed(self) -> bool:
        return self.from_status != self.to_status
