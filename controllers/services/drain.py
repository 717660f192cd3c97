"""A bounded, reversible drain: an MC stops taking meetings and hands back the ones it has by a deadline.

- `drain_begin`: the MC goes `draining` at once (placement only picks healthy/degraded MCs, so it gets no new
  meetings), with a deadline (DRAIN_DEFAULT_DEADLINE_SECONDS unless given) and optionally a target MC. An MC
  that reports DRAINING itself gets DRAIN_DEFAULT_DEADLINE_SECONDS in the heartbeat statement that stores the
  state (controllers.services.registration), so every drain is bounded. An operator's drain survives the MC's
  re-registration; a self-reported one ends with it.
- `drain_cancel` (undrain): back to `pending`; the next good heartbeat promotes it (heartbeat_recovery) and
  placement resumes.
- `drains_enforce` (the periodic job that moves or ends a draining MC's meetings past its deadline) works on
  assignments, so it lives with them: meetings.services.drain_deadlines.

Every step is a conditional statement: two runs at once claim different MCs (FOR UPDATE SKIP LOCKED) and a
join racing the job for one meeting either ends that assignment itself or finds it moved.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime

from django.conf import settings
from django.db import connection, transaction

from audit.models import ActorType
from audit.services import audit_record, outbox_enqueue
from controllers.members import CONTROLLERS, HealthChange
from controllers.models import HealthStatus, TransitionReason
from controllers.services.transitions import changed_cte_sql
from darktower.errors import Conflict, InvalidInput, NotFound

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DrainStarted:
    controller_id: str
    from_status: str
    drain_deadline: datetime
    target_controller_id: str | None
    active_assignments: int


# The drain sets the deadline and target in the statement that changes the state; the transition is recorded
# by the same statement. From any state but draining (re-draining a draining MC updates deadline and target).
_BEGIN_SQL = "WITH {ctes} SELECT id, region, from_status, to_status FROM changed"

_REDRAIN_SQL = """
UPDATE meeting_controllers
SET drain_deadline = now() + make_interval(secs => %(deadline)s), drain_target_controller_id = %(target)s
WHERE controller_id = %(controller_id)s AND health_status = 'draining'
RETURNING controller_id
"""


def drain_begin(
    *,
    controller_id: str,
    deadline_seconds: int | None = None,
    target_controller_id: str | None = None,
    actor_type: str = ActorType.USER,
    actor_user_id: uuid.UUID | None = None,
    reason: str = TransitionReason.OPERATOR,
) -> DrainStarted:
    """Put an MC into `draining` with a deadline. Operators: actor_type="user", reason="operator" (defaults).
    An MC reporting DRAINING itself: actor_type="service", reason="heartbeat".

    Raises InvalidInput (bad deadline, target = itself), NotFound (unknown MC or target). Writes the transition
    and a `controller_drain_started` audit row naming the actor, in one transaction.
    """
    seconds = settings.DRAIN_DEFAULT_DEADLINE_SECONDS if deadline_seconds is None else deadline_seconds
    if not isinstance(seconds, int) or isinstance(seconds, bool) or not 0 <= seconds <= 7 * 86400:
        raise InvalidInput("deadline_seconds must be an integer from 0 to 604800.")
    if target_controller_id is not None and target_controller_id == controller_id:
        raise InvalidInput("A controller cannot drain to itself.")
    ctes = changed_cte_sql(
        CONTROLLERS,
        where="t.controller_id = %(controller_id)s AND t.health_status <> 'draining'",
        set_status="'draining'",
        extra_set=", drain_deadline = now() + make_interval(secs => %(deadline)s), "
        "drain_target_controller_id = %(target)s",
        metadata="jsonb_build_object('deadline_seconds', %(deadline)s, 'target_controller_id', %(target)s::text)",
    )
    params: dict[str, str | int | uuid.UUID | None] = {
        "controller_id": controller_id, "deadline": seconds, "target": target_controller_id,
        "component_type": CONTROLLERS.component_type, "reason": str(reason), "actor_type": str(actor_type),
        "actor_user_id": actor_user_id,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        if target_controller_id is not None:
            cursor.execute("SELECT 1 FROM meeting_controllers WHERE controller_id = %s", [target_controller_id])
            if cursor.fetchone() is None:
                raise NotFound(f"Target controller {target_controller_id} does not exist.")
        cursor.execute(_BEGIN_SQL.format(ctes=ctes), params)
        row = cursor.fetchone()
        from_status = row[2] if row else HealthStatus.DRAINING
        if row is None:
            cursor.execute(_REDRAIN_SQL, params)
            if cursor.fetchone() is None:
                raise NotFound(f"Controller {controller_id} does not exist.")
        cursor.execute(
            "SELECT mc.drain_deadline, (SELECT count(*) FROM meeting_assignments a "
            "WHERE a.meeting_controller_id = mc.controller_id AND a.ended_at IS NULL) "
            "FROM meeting_controllers mc WHERE mc.controller_id = %s",
            [controller_id],
        )
        deadline, active = cursor.fetchone()
        started = DrainStarted(controller_id, from_status, deadline, target_controller_id, active)
        outbox_enqueue(
            aggregate_type=CONTROLLERS.aggregate_type, aggregate_id=controller_id, event_type="controller_draining",
            payload={
                "id": controller_id, "from_status": from_status, "to_status": HealthStatus.DRAINING,
                "drain_deadline": deadline.isoformat(), "target_controller_id": target_controller_id,
            },
        )
        audit_record(
            event_type="controller_drain_started", action="drain", actor_type=actor_type,
            actor_user_id=actor_user_id, target_type="meeting_controller", target_id=controller_id,
            metadata={
                "from_status": from_status, "drain_deadline": deadline.isoformat(), "deadline_seconds": seconds,
                "target_controller_id": target_controller_id, "active_assignments": active, "reason": str(reason),
            },
        )
    return started


def drain_cancel(
    *, controller_id: str, actor_type: str = ActorType.USER, actor_user_id: uuid.UUID | None = None
) -> HealthChange:
    """Undrain: `draining` -> `pending` (deadline and target cleared by the trigger); the next good heartbeat
    makes it healthy again. Also the way back for an MC the drain deadline made unhealthy.

    Raises NotFound, or Conflict when the MC is in neither state. Transition + `controller_undrained` audit row.
    """
    ctes = changed_cte_sql(
        CONTROLLERS,
        where="t.controller_id = %(controller_id)s AND (t.health_status = 'draining' OR (t.health_status = "
        "'unhealthy' AND (SELECT ht.reason FROM controller_health_transitions ht "
        "WHERE ht.component_type = 'controller' AND ht.component_id = t.controller_id "
        "ORDER BY ht.created_at DESC, ht.id DESC LIMIT 1) = 'drain-deadline'))",
        set_status="'pending'",
    )
    params = {
        "controller_id": controller_id, "component_type": CONTROLLERS.component_type,
        "reason": TransitionReason.OPERATOR,
        "actor_type": str(actor_type), "actor_user_id": actor_user_id, "metadata": json.dumps({"action": "undrain"}),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_BEGIN_SQL.format(ctes=ctes), params)
        row = cursor.fetchone()
        if row is None:
            cursor.execute("SELECT health_status FROM meeting_controllers WHERE controller_id = %s", [controller_id])
            current = cursor.fetchone()
            if current is None:
                raise NotFound(f"Controller {controller_id} does not exist.")
            raise Conflict(f"Controller {controller_id} is {current[0]}, not draining.")
        changed = HealthChange(*row)
        outbox_enqueue(
            aggregate_type=CONTROLLERS.aggregate_type, aggregate_id=controller_id, event_type="controller_undrained",
            payload={"id": controller_id, "from_status": changed.from_status, "to_status": changed.to_status},
        )
        audit_record(
            event_type="controller_undrained", action="undrain", actor_type=actor_type, actor_user_id=actor_user_id,
            target_type="meeting_controller", target_id=controller_id,
            metadata={"from_status": changed.from_status, "to_status": changed.to_status},
        )
    return changed
