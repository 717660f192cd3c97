"""What operators do to a controller or a media handler (admin actions, `POST /api/v1/controllers/{id}/drain|undrain`).

Each function is one transaction, a compare-and-set on the controller's state, and an audit row naming the
operator. Drain and undrain are the bounded drain of controllers/services/drain.py; this module
is the operators' entry point so that the admin and the REST API share one vocabulary.
"""

from __future__ import annotations

import uuid

from django.db import connection, transaction

from audit.models import ActorType
from audit.services import audit_record, outbox_enqueue
from controllers.members import CONTROLLERS, HANDLERS, HealthChange
from controllers.models import HealthStatus, MediaHandler, MeetingController, TransitionReason
from controllers.services.capacity import release_cte_sql, unassign_cte_sql
from controllers.services.drain import DrainStarted, drain_begin, drain_cancel
from controllers.services.transitions import health_transition
from darktower.errors import Conflict, NotFound

_LIVE_STATES = [HealthStatus.PENDING, HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.DRAINING]


def controller_drain(
    *,
    controller_id: str,
    actor_user_id: uuid.UUID | None = None,
    deadline_seconds: int | None = None,
    target_controller_id: str | None = None,
) -> DrainStarted:
    """No new meetings from now on; at the deadline the rest are ended or moved to the target."""
    return drain_begin(
        controller_id=controller_id, deadline_seconds=deadline_seconds, target_controller_id=target_controller_id,
        actor_type=ActorType.USER, actor_user_id=actor_user_id, reason=TransitionReason.OPERATOR,
    )


def controller_undrain(*, controller_id: str, actor_user_id: uuid.UUID | None = None) -> HealthChange:
    """Back to `pending`; placement resumes after the controller's next good heartbeat."""
    return drain_cancel(controller_id=controller_id, actor_type=ActorType.USER, actor_user_id=actor_user_id)


def controller_mark_unhealthy(*, controller_id: str, actor_user_id: uuid.UUID | None = None) -> HealthChange:
    """Take a controller out of placement now. Heartbeats do not bring it back: re-registration does (to
    `pending`, held until UNHEALTHY_HOLD_DOWN_SECONDS after the mark, see controller_register)."""
    with transaction.atomic():
        changed = health_transition(
            kind=CONTROLLERS, ids=[controller_id], from_states=_LIVE_STATES, to_status=HealthStatus.UNHEALTHY,
            reason=TransitionReason.OPERATOR, actor_type=ActorType.USER, actor_user_id=actor_user_id,
        )
        if not changed:
            status = MeetingController.objects.filter(pk=controller_id).values_list("health_status", flat=True)
            current = status.first()
            if current is None:
                raise NotFound(f"Controller {controller_id} does not exist.")
            raise Conflict(f"Controller {controller_id} is already {current}.")
        result = changed[0]
        audit_record(
            event_type=CONTROLLERS.event("unhealthy"), action="mark_unhealthy", actor_type=ActorType.USER,
            actor_user_id=actor_user_id, target_type=CONTROLLERS.target_type, target_id=controller_id,
            metadata={"from_status": result.from_status, "reason": "operator"},
        )
        # The aggregate type and payload of every controller_unhealthy event (sweep, drain deadline, operator).
        outbox_enqueue(
            aggregate_type=CONTROLLERS.aggregate_type, aggregate_id=controller_id,
            event_type=CONTROLLERS.event("unhealthy"),
            payload={
                "id": controller_id, "region": result.region, "from_status": result.from_status,
                "to_status": result.to_status, "reason": "operator",
            },
        )
    return result


# Ends them, gives back what they held on the MC and points their meetings away from it, in one statement.
_END_ASSIGNMENTS_SQL = """
WITH ended AS (
    UPDATE meeting_assignments SET ended_at = greatest(now(), assigned_at), end_reason = 'reassigned'
    WHERE meeting_controller_id = %(controller_id)s AND ended_at IS NULL
    RETURNING meeting_id, meeting_controller_id, reserved_participants
), {released}, {unassigned}
SELECT count(*) FROM ended
""".format(released=release_cte_sql("ended"), unassigned=unassign_cte_sql("ended"))  # noqa: S608 -- constants only


def controller_end_assignments(*, controller_id: str, actor_user_id: uuid.UUID | None = None) -> int:
    """End every active assignment of the controller (`reassigned`), giving back the meetings and reserved
    participants they held on it and clearing meetings.assigned_controller_id: the next join of each meeting
    picks a controller afresh. Returns how many ended."""
    with transaction.atomic():
        if not MeetingController.objects.filter(pk=controller_id).exists():
            raise NotFound(f"Controller {controller_id} does not exist.")
        with connection.cursor() as cursor:
            cursor.execute(_END_ASSIGNMENTS_SQL, {"controller_id": controller_id})
            (ended,) = cursor.fetchone()
        audit_record(
            event_type=CONTROLLERS.event("assignments_ended"), action="end_assignments", actor_type=ActorType.USER,
            actor_user_id=actor_user_id, target_type=CONTROLLERS.target_type, target_id=controller_id,
            metadata={"ended": ended},
        )
    return ended


# Media handlers: no bounded drain (they hold no assignments of ours), the same compare-and-set and audit.
_HANDLER_LIVE_STATES = (HealthStatus.PENDING, HealthStatus.HEALTHY, HealthStatus.DEGRADED)


def _handler_transition(
    *, handler_id: str, action: str, from_states: tuple[str, ...], to_status: str, actor_user_id: uuid.UUID | None
) -> HealthChange:
    with transaction.atomic():
        changed = health_transition(
            kind=HANDLERS, ids=[handler_id], from_states=from_states, to_status=to_status,
            reason=TransitionReason.OPERATOR, actor_type=ActorType.USER, actor_user_id=actor_user_id,
        )
        if not changed:
            current = MediaHandler.objects.filter(pk=handler_id).values_list("health_status", flat=True).first()
            if current is None:
                raise NotFound(f"Media handler {handler_id} does not exist.")
            raise Conflict(f"Media handler {handler_id} is {current}, not {' or '.join(from_states)}.")
        result = changed[0]
        audit_record(
            event_type=HANDLERS.event(action), action=action, actor_type=ActorType.USER,
            actor_user_id=actor_user_id, target_type=HANDLERS.target_type, target_id=handler_id,
            metadata={"from_status": result.from_status, "to_status": result.to_status, "reason": "operator"},
        )
        if to_status == HealthStatus.UNHEALTHY:
            outbox_enqueue(
                aggregate_type=HANDLERS.aggregate_type, aggregate_id=handler_id, event_type=HANDLERS.event("unhealthy"),
                payload={
                    "id": handler_id, "region": result.region, "from_status": result.from_status,
                    "to_status": result.to_status, "reason": "operator",
                },
            )
    return result


def handler_drain(*, handler_id: str, actor_user_id: uuid.UUID | None = None) -> HealthChange:
    """No new streams: heartbeats no longer change its state and the sweep leaves it alone until undrained."""
    return _handler_transition(
        handler_id=handler_id, action="drain", from_states=_HANDLER_LIVE_STATES, to_status=HealthStatus.DRAINING,
        actor_user_id=actor_user_id,
    )


def handler_undrain(*, handler_id: str, actor_user_id: uuid.UUID | None = None) -> HealthChange:
    """Back to `pending`; healthy again after its next good load report."""
    return _handler_transition(
        handler_id=handler_id, action="undrain", from_states=(HealthStatus.DRAINING,), to_status=HealthStatus.PENDING,
        actor_user_id=actor_user_id,
    )


def handler_mark_unhealthy(*, handler_id: str, actor_user_id: uuid.UUID | None = None) -> HealthChange:
    """Out of use now; back through the hold-down or by re-registering."""
    return _handler_transition(
        handler_id=handler_id, action="mark_unhealthy", from_states=(*_HANDLER_LIVE_STATES, HealthStatus.DRAINING),
        to_status=HealthStatus.UNHEALTHY, actor_user_id=actor_user_id,
    )
