"""Which meeting controller (MC) runs a meeting in a region: the heart of the join flow.

1. An active assignment whose MC is healthy with a fresh heartbeat (younger than
   HEARTBEAT_STALE_THRESHOLD_SECONDS, judged by the database's clock) is reused as is.
2. Otherwise the PLACEMENT_CANDIDATES (5) least-loaded candidates are read: same region, healthy, below
   max_meetings, fresh heartbeat; load ratio current_meetings / max_meetings, ties to the newest heartbeat.
   Degraded MCs are candidates only when no healthy one exists (and a degraded MC that already runs the
   meeting then keeps it, rather than moving it to another degraded one). The query goes through
   ControllerQuerySet.available_in, i.e. the partial index idx_meeting_controllers_available.
3. One is drawn at random with weight 1 - min(load_ratio, 0.99), so load spreads without every GC process
   piling onto the single least-loaded MC between two heartbeats.
4. In one transaction: end the stale assignment, insert the new one, bump the MC's current_meetings (a
   conditional UPDATE that refuses a full or no longer available MC, falling back to the next candidate of
   the draw and, when all of them filled up meanwhile, to one fresh read), point
   meetings.assigned_controller_id / assigned_region at it, write the `meeting_assigned` outbox event and the
   audit row.

Races: the partial unique index uq_meeting_assignments_active allows one active assignment per (meeting,
region). The insert is INSERT ... ON CONFLICT DO NOTHING: a concurrent request that inserted first makes
ours insert nothing (PostgreSQL waits for the other transaction to commit before deciding), and we return the
winner's assignment, so every concurrent join of a meeting in a region gets the same MC. Two requests that
both saw the same stale assignment serialise on its row: the second one's UPDATE finds it already ended,
its insert conflicts with the first one's new row, and it returns that. The REST join also holds the meeting
row (capacity check), but this function does not rely on it (tests/meetings/test_assignment_concurrency.py
races it without that lock).
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import connection, transaction
from django.db.models import BooleanField, ExpressionWrapper, F, FloatField, Q
from django.db.models.functions import Cast, Now, NullIf

from audit.models import ActorType
from audit.services import audit_record, outbox_enqueue
from controllers.models import AVAILABLE_STATES, HealthStatus, MeetingController
from darktower.errors import NoCapacity

END_REASON_REASSIGNED = "reassigned"
MAX_WEIGHT_LOAD = 0.99  # a nearly full MC keeps a small chance, never zero weight

_rng = random.SystemRandom()


@dataclass(frozen=True)
class Candidate:
    controller_id: str
    health_status: str
    current_meetings: int
    max_meetings: int

    @property
    def load_ratio(self) -> float:
        return self.current_meetings / self.max_meetings if self.max_meetings else 1.0

    @property
    def weight(self) -> float:
        return 1.0 - min(self.load_ratio, MAX_WEIGHT_LOAD)


@dataclass(frozen=True)
class Assignment:
    assignment_id: int
    meeting_id: uuid.UUID
    region: str
    controller_id: str
    grpc_endpoint: str
    webtransport_endpoint: str | None
    reused: bool


def stale_threshold() -> timedelta:
    return timedelta(seconds=settings.HEARTBEAT_STALE_THRESHOLD_SECONDS)


def assignment_candidates(region: str, *, limit: int | None = None) -> list[Candidate]:
    """Up to `limit` least-loaded candidates: healthy ones if any exist, else degraded ones."""
    rows = (
        MeetingController.objects.available_in(region)
        .filter(current_meetings__lt=F("max_meetings"), last_heartbeat_at__gt=Now() - stale_threshold())
        .annotate(
            healthy=ExpressionWrapper(Q(health_status=HealthStatus.HEALTHY), output_field=BooleanField()),
            load=Cast("current_meetings", FloatField()) / Cast(NullIf(F("max_meetings"), 0), FloatField()),
        )
        .order_by("-healthy", "load", "-last_heartbeat_at", "controller_id")
        .values_list("controller_id", "health_status", "current_meetings", "max_meetings")[
            : limit or settings.PLACEMENT_CANDIDATES
        ]
    )
    candidates = [Candidate(*row) for row in rows]
    # Healthy rows sort first: when the first is healthy, degraded rows that filled the list are dropped.
    if candidates and candidates[0].health_status == HealthStatus.HEALTHY:
        candidates = [c for c in candidates if c.health_status == HealthStatus.HEALTHY]
    return candidates


def weighted_order(candidates: Sequence[Candidate], rng: random.Random | None = None) -> list[Candidate]:
    """The candidates in the order to try them: repeated weighted draws without replacement. The first is
    the choice; the rest are fallbacks should the choice fill up before our bump lands."""
    rng = rng or _rng
    remaining = list(candidates)
    order: list[Candidate] = []
    while remaining:
        index = rng.choices(range(len(remaining)), weights=[c.weight for c in remaining])[0]
        order.append(remaining.pop(index))
    return order


# Served by uq_meeting_assignments_active (meeting_id, region) WHERE ended_at IS NULL.
_ACTIVE_SQL = """
SELECT a.id, a.meeting_controller_id, mc.grpc_endpoint, mc.webtransport_endpoint, mc.health_status,
       mc.last_heartbeat_at > now() - make_interval(secs => %(stale)s) AS fresh
FROM meeting_assignments a
JOIN meeting_controllers mc ON mc.controller_id = a.meeting_controller_id
WHERE a.meeting_id = %(meeting_id)s AND a.region = %(region)s AND a.ended_at IS NULL
"""

# greatest(): an assignment committed after this transaction began has assigned_at later than its now().
_END_SQL = """
UPDATE meeting_assignments SET ended_at = greatest(now(), assigned_at), end_reason = %(reason)s
WHERE id = %(id)s AND ended_at IS NULL
RETURNING meeting_controller_id
"""

_INSERT_SQL = """
INSERT INTO meeting_assignments (meeting_id, meeting_controller_id, region, assigned_at, assigned_by_gc_id)
VALUES (%(meeting_id)s, %(controller_id)s, %(region)s, now(), %(gc_id)s)
ON CONFLICT (meeting_id, region) WHERE ended_at IS NULL DO NOTHING
RETURNING id
"""

# Compare-and-set on capacity and availability: the candidate read may be a few milliseconds old.
_BUMP_SQL = """
UPDATE meeting_controllers SET current_meetings = current_meetings + 1
WHERE controller_id = %(controller_id)s AND current_meetings < max_meetings
  AND health_status = ANY(%(available)s) AND last_heartbeat_at > now() - make_interval(secs => %(stale)s)
RETURNING grpc_endpoint, webtransport_endpoint
"""

_RELEASE_SQL = """
UPDATE meeting_controllers SET current_meetings = current_meetings - 1
WHERE controller_id = %(controller_id)s AND current_meetings > 0
"""


def _bump_first_with_room(  # type: ignore[no-untyped-def]
    cursor, order: Sequence[Candidate], params: dict[str, Any]
) -> tuple[Candidate, tuple[str, str | None]] | None:
    """Take a meeting slot on the first candidate in `order` that still has one (compare-and-set)."""
    available = [str(state) for state in AVAILABLE_STATES]
    for candidate in order:
        cursor.execute(_BUMP_SQL, {**params, "controller_id": candidate.controller_id, "available": available})
        endpoints = cursor.fetchone()
        if endpoints is not None:
            return candidate, endpoints
    return None


def meeting_assign(
    *, meeting_id: uuid.UUID, region: str, actor_user_id: uuid.UUID | None = None, rng: random.Random | None = None
) -> Assignment:
    """The MC that runs `meeting_id` in `region`, assigning one if needed (see the module docstring).
    Raises NoCapacity when no MC in the region can take the meeting."""
    params = {"meeting_id": meeting_id, "region": region, "stale": stale_threshold().total_seconds()}
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_ACTIVE_SQL, params)
        active = cursor.fetchone()
        if active is not None and active[4] == HealthStatus.HEALTHY and active[5]:
            return Assignment(active[0], meeting_id, region, active[1], active[2], active[3], reused=True)

        candidates = assignment_candidates(region)
        healthy_available = bool(candidates) and candidates[0].health_status == HealthStatus.HEALTHY
        if active is not None and active[5] and active[4] == HealthStatus.DEGRADED and not healthy_available:
            # Degraded fallback: a degraded MC that runs the meeting keeps it rather than moving it to another.
            return Assignment(active[0], meeting_id, region, active[1], active[2], active[3], reused=True)
        if not candidates:
            raise NoCapacity(f"No meeting controller is available in region {region}.")

        previous_controller_id = None
        if active is not None:
            cursor.execute(_END_SQL, {"id": active[0], "reason": END_REASON_REASSIGNED})
            ended = cursor.fetchone()
            if ended is not None:
                previous_controller_id = ended[0]
                cursor.execute(_RELEASE_SQL, {"controller_id": previous_controller_id})

        order = weighted_order(candidates, rng)
        cursor.execute(_INSERT_SQL, {**params, "controller_id": order[0].controller_id, "gc_id": settings.GC_ID})
        inserted = cursor.fetchone()
        if inserted is None:
            # A concurrent request assigned the meeting first; its choice stands.
            cursor.execute(_ACTIVE_SQL, params)
            winner = cursor.fetchone()
            if winner is None:
                raise NoCapacity(f"No meeting controller is available in region {region}.")
            return Assignment(winner[0], meeting_id, region, winner[1], winner[2], winner[3], reused=True)
        assignment_id = inserted[0]

        taken = _bump_first_with_room(cursor, order, params)
        if taken is None:
            # Every candidate filled up or went away since the read (other joins committed their bumps in
            # between). Read once more before answering 503: the region may have room on an MC that was not
            # among the first few candidates.
            taken = _bump_first_with_room(cursor, weighted_order(assignment_candidates(region), rng), params)
        if taken is None:
            # The insert above rolls back with this.
            raise NoCapacity(f"No meeting controller is available in region {region}.")
        chosen, endpoints = taken
        if chosen.controller_id != order[0].controller_id:
            cursor.execute(
                "UPDATE meeting_assignments SET meeting_controller_id = %s WHERE id = %s",
                [chosen.controller_id, assignment_id],
            )
        cursor.execute(
            "UPDATE meetings SET assigned_controller_id = %s, assigned_region = %s WHERE meeting_id = %s",
            [chosen.controller_id, region, meeting_id],
        )
        payload = {
            "meeting_id": str(meeting_id), "region": region, "controller_id": chosen.controller_id,
            "previous_controller_id": previous_controller_id, "assignment_id": assignment_id,
            "assigned_by_gc_id": settings.GC_ID,
        }
        outbox_enqueue(aggregate_type="meeting", aggregate_id=str(meeting_id), event_type="meeting_assigned",
                       payload=payload)
        audit_record(
            event_type="meeting_assigned", action="assign",
            actor_type=ActorType.USER if actor_user_id else ActorType.SYSTEM, actor_user_id=actor_user_id,
            target_type="meeting", target_id=str(meeting_id),
            metadata={key: value for key, value in payload.items() if key != "meeting_id"},
        )
        return Assignment(assignment_id, meeting_id, region, chosen.controller_id, endpoints[0], endpoints[1],
                          reused=False)
