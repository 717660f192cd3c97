"""Which meeting controller (MC) runs a meeting in a region: the heart of the join flow.

1. An active assignment whose MC is healthy with a fresh heartbeat (younger than
   HEARTBEAT_STALE_THRESHOLD_SECONDS, judged by the database's clock) is reused as is (rule `reused`).
2. Otherwise the PLACEMENT_CANDIDATES (5) least-loaded candidates are read: same region, healthy, fresh
   heartbeat, with room. Load is the effective load (in-flight accounting, controllers.services.capacity):
   (current_meetings + assigned_since_heartbeat) / max_meetings, ties to the newest heartbeat. Room means
   effective load below max_meetings, fewer than PLACEMENT_MAX_ASSIGNMENTS_PER_MINUTE assignments in the MC's
   current one-minute window (when the cap is on), and, for a large meeting (max_participants above
   PLACEMENT_LARGE_MEETING_THRESHOLD), current_participants + reserved_participants + max_participants within
   the MC's max_participants: a large meeting reserves its whole max_participants as its expected size.
   Degraded MCs are candidates only when no healthy one exists (rule `degraded_fallback`; a degraded MC that
   already runs the meeting then keeps it, rather than moving it to another degraded one). The query filters
   on ControllerQuerySet.available_in's states (AVAILABLE_STATES), i.e. the partial index
   idx_meeting_controllers_available (tests/meetings/test_assignment.py checks the plan).
3. One is drawn at random with weight 1 - min(load_ratio, 0.99) (rule `least_loaded`), so load spreads without
   every GC process piling onto the single least-loaded MC between two heartbeats.
4. In one transaction: end the stale assignment (giving back what it held on its MC), insert the new one, and
   claim the MC's capacity with one conditional UPDATE that re-checks every rule of step 2 on the newest row
   version (hard capacity: whatever the reports say, no assignment takes an MC past max_meetings) and takes
   the slot: assigned_since_heartbeat + 1, the reservation, the per-minute window. A candidate that filled up
   meanwhile makes it fall back to the next one of the draw and, when all of them did, to a fresh read (up to
   FRESH_READS times). Then point meetings.assigned_controller_id / assigned_region at the MC, write the
   `meeting_assigned` outbox event and the audit row, both naming the rule; the darktower_assignments
   {rule,outcome} counter moves when the transaction commits (at once for no_capacity).

The join runs this inside its own transaction (meeting_assign_in_transaction): no savepoint of its own, the
meeting's max_participants from the row the join already holds, and the audit row handed back so that the join
writes it in one INSERT with its own. The hot path is raw SQL: the ORM's query compilation cost more CPU than
the database spent on the statements.

Races: the partial unique index uq_meeting_assignments_active allows one active assignment per (meeting,
region). The insert is INSERT ... ON CONFLICT DO NOTHING: a concurrent request that inserted first makes
ours insert nothing (PostgreSQL waits for the other transaction to commit before deciding), and we return the
winner's assignment, so every concurrent join of a meeting in a region gets the same MC. Two requests that
both saw the same stale assignment serialise on its row: the second one's UPDATE finds it already ended,
its insert conflicts with the first one's new row, and it returns that. The REST join also holds the meeting
row (capacity check), but this function does not rely on it (tests/meetings/test_assignment_concurrency.py
races it without that lock). Concurrent joins of different meetings serialise on the MC row they claim: the
claim's WHERE is re-evaluated on the row a concurrent claim committed, so capacity is never oversold
(tests/meetings/test_placement.py).
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
from django.db.transaction import TransactionManagementError

from audit.models import ActorType
from audit.services import AuditEntry, audit_record_many, outbox_enqueue
from controllers.models import AVAILABLE_STATES, HealthStatus
from controllers.services.capacity import PlacementOutcome, PlacementRule, release_cte_sql
from darktower.errors import NoCapacity
from darktower.metrics import ASSIGNMENTS
from darktower.process import gc_id

END_REASON_REASSIGNED = "reassigned"
MAX_WEIGHT_LOAD = 0.99  # a nearly full MC keeps a small chance, never zero weight
# Fresh reads of the region after every candidate of a draw filled up: each failed claim means a concurrent
# join took that MC's last slot (claims wait for each other's commit), so a few rounds find any room left.
FRESH_READS = 3
# The per-MC assignment cap counts assignments in fixed windows of this length, each starting at the first
# assignment after the previous window ended.
ASSIGNMENT_WINDOW = timedelta(minutes=1)

_rng = random.SystemRandom()


@dataclass(frozen=True)
class Candidate:
    controller_id: str
    health_status: str
    current_meetings: int
    max_meetings: int
    # Assigned since the MC's last heartbeat (in-flight accounting): part of its load.
    in_flight: int = 0

    @property
    def load_ratio(self) -> float:
        return (self.current_meetings + self.in_flight) / self.max_meetings if self.max_meetings else 1.0

    @property
    def weight(self) -> float:
        return 1.0 - min(self.load_ratio, MAX_WEIGHT_LOAD)

    @property
    def rule(self) -> PlacementRule:
        if self.health_status == HealthStatus.HEALTHY:
            return PlacementRule.LEAST_LOADED
        return PlacementRule.DEGRADED_FALLBACK


@dataclass(frozen=True)
class Assignment:
    assignment_id: int
    meeting_id: uuid.UUID
    region: str
    controller_id: str
    grpc_endpoint: str
    webtransport_endpoint: str | None
    reused: bool
    rule: str = PlacementRule.REUSED


def stale_threshold() -> timedelta:
    return timedelta(seconds=settings.HEARTBEAT_STALE_THRESHOLD_SECONDS)


def participants_reserved_for(max_participants: int) -> int:
    """The participants a meeting reserves on its MC: its whole max_participants when that is above
    PLACEMENT_LARGE_MEETING_THRESHOLD (the expected size of a large meeting), else none."""
    return max_participants if max_participants > settings.PLACEMENT_LARGE_MEETING_THRESHOLD else 0


# Step 2 of the module docstring. ControllerQuerySet.available_in's filter (region, AVAILABLE_STATES) written
# out, so that the planner can prove the partial index idx_meeting_controllers_available's predicate; the
# ordering is "healthy first, then the effective load ratio, ties to the newest heartbeat".
_CANDIDATES_SQL = """
SELECT controller_id, health_status, current_meetings, max_meetings, assigned_since_heartbeat
FROM meeting_controllers
WHERE region = %(region)s AND health_status IN ({available})
  AND last_heartbeat_at > statement_timestamp() - make_interval(secs => %(stale)s)
  AND current_meetings + assigned_since_heartbeat < max_meetings
  AND (%(per_minute)s = 0 OR assignments_window_start IS NULL
       OR assignments_window_start <= statement_timestamp() - make_interval(secs => %(window)s)
       OR assignments_in_window < %(per_minute)s)
  AND (%(reserve)s = 0 OR current_participants + reserved_participants + %(reserve)s <= max_participants)
ORDER BY health_status = '{healthy}' DESC,
         (current_meetings + assigned_since_heartbeat)::double precision
             / NULLIF(max_meetings, 0)::double precision,
         last_heartbeat_at DESC, controller_id
LIMIT %(limit)s
""".format(  # constants only
    available=", ".join(f"'{state}'" for state in AVAILABLE_STATES), healthy=HealthStatus.HEALTHY
)


def assignment_candidates(region: str, *, limit: int | None = None, reserve: int = 0) -> list[Candidate]:
    """Up to `limit` least-loaded candidates with room (module docstring, step 2) for a meeting that reserves
    `reserve` participants: healthy ones if any exist, else degraded ones."""
    params = {
        "region": region, "stale": stale_threshold().total_seconds(), "reserve": reserve,
        "per_minute": settings.PLACEMENT_MAX_ASSIGNMENTS_PER_MINUTE, "window": ASSIGNMENT_WINDOW.total_seconds(),
        "limit": limit or settings.PLACEMENT_CANDIDATES,
    }
    with connection.cursor() as cursor:
        cursor.execute(_CANDIDATES_SQL, params)
        candidates = [Candidate(*row) for row in cursor.fetchall()]
    # Healthy rows sort first: when the first is healthy, degraded rows that filled the list are dropped.
    if candidates and candidates[0].health_status == HealthStatus.HEALTHY:
        candidates = [c for c in candidates if c.health_status == HealthStatus.HEALTHY]
    return candidates


def weighted_order(candidates: Sequence[Candidate], rng: random.Random | None = None) -> list[Candidate]:
    """The candidates in the order to try them: repeated weighted draws without replacement. The first is
    the choice; the rest are fallbacks should the choice fill up before our claim lands."""
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
WITH ended AS (
    UPDATE meeting_assignments SET ended_at = greatest(now(), assigned_at), end_reason = %(reason)s
    WHERE id = %(id)s AND ended_at IS NULL
    RETURNING meeting_controller_id, reserved_participants
), {released}
SELECT meeting_controller_id FROM ended
""".format(released=release_cte_sql("ended"))  # noqa: S608 -- constants only

_INSERT_SQL = """
INSERT INTO meeting_assignments
    (meeting_id, meeting_controller_id, region, assigned_at, assigned_by_gc_id, reserved_participants)
VALUES (%(meeting_id)s, %(controller_id)s, %(region)s, now(), %(gc_id)s, %(reserve)s)
ON CONFLICT (meeting_id, region) WHERE ended_at IS NULL DO NOTHING
RETURNING id
"""

# The claim: compare-and-set on every rule of the candidate read, which may be a few milliseconds old. Under
# READ COMMITTED a claim that waited for a concurrent claim of the same row re-evaluates this WHERE on the row
# that one committed, so two joins can never both take an MC's last slot.
_CLAIM_SQL = """
UPDATE meeting_controllers
SET assigned_since_heartbeat = assigned_since_heartbeat + 1,
    reserved_participants = reserved_participants + %(reserve)s,
    assignments_window_start = CASE WHEN assignments_window_start > now() - make_interval(secs => %(window)s)
                                    THEN assignments_window_start ELSE now() END,
    assignments_in_window = CASE WHEN assignments_window_start > now() - make_interval(secs => %(window)s)
                                 THEN assignments_in_window + 1 ELSE 1 END
WHERE controller_id = %(controller_id)s
  AND current_meetings + assigned_since_heartbeat < max_meetings
  AND health_status = ANY(%(available)s) AND last_heartbeat_at > now() - make_interval(secs => %(stale)s)
  AND (%(per_minute)s = 0 OR assignments_in_window < %(per_minute)s
       OR NOT coalesce(assignments_window_start > now() - make_interval(secs => %(window)s), false))
  AND (%(reserve)s = 0 OR current_participants + reserved_participants + %(reserve)s <= max_participants)
RETURNING grpc_endpoint, webtransport_endpoint
"""


def _claim_first_with_room(  # type: ignore[no-untyped-def]
    cursor, order: Sequence[Candidate], params: dict[str, Any]
) -> tuple[Candidate, tuple[str, str | None]] | None:
    """Take a meeting slot on the first candidate in `order` that still has one (compare-and-set)."""
    for candidate in order:
        cursor.execute(_CLAIM_SQL, {**params, "controller_id": candidate.controller_id})
        endpoints = cursor.fetchone()
        if endpoints is not None:
            return candidate, endpoints
    return None


def _count(rule: str, outcome: str) -> None:
    """darktower_assignments{rule,outcome}, once the transaction that made the assignment commits."""
    transaction.on_commit(ASSIGNMENTS.labels(rule, outcome).inc)


def _no_capacity(region: str, rule: str) -> NoCapacity:
    # The transaction rolls back with the error: counted now, there is no commit to wait for.
    ASSIGNMENTS.labels(rule, PlacementOutcome.NO_CAPACITY).inc()
    return NoCapacity(f"No meeting controller is available in region {region}.")


def meeting_assign(
    *, meeting_id: uuid.UUID, region: str, actor_user_id: uuid.UUID | None = None, rng: random.Random | None = None
) -> Assignment:
    """The MC that runs `meeting_id` in `region`, assigning one if needed (see the module docstring).
    Raises NoCapacity when no MC in the region can take the meeting."""
    audit_entries: list[AuditEntry] = []
    with transaction.atomic():
        assignment = meeting_assign_in_transaction(
            meeting_id=meeting_id, region=region, actor_user_id=actor_user_id, rng=rng, audit_entries=audit_entries
        )
        audit_record_many(audit_entries)
    return assignment


def meeting_assign_in_transaction(
    *,
    meeting_id: uuid.UUID,
    region: str,
    audit_entries: list[AuditEntry],
    actor_user_id: uuid.UUID | None = None,
    rng: random.Random | None = None,
    max_participants: int | None = None,
) -> Assignment:
    """meeting_assign inside the caller's transaction (the join's), without a savepoint of its own: an error
    leaves that transaction to be rolled back, so the caller lets it propagate. `max_participants` is the
    meeting's when the caller has read it already (else it is read here). The audit row of a new assignment is
    appended to `audit_entries`; the caller writes it in the same transaction."""
    if not connection.in_atomic_block:
        raise TransactionManagementError("meeting_assign_in_transaction needs the caller's transaction.")
    params: dict[str, Any] = {
        "meeting_id": meeting_id, "region": region, "stale": stale_threshold().total_seconds(),
    }
    with connection.cursor() as cursor:
        cursor.execute(_ACTIVE_SQL, params)
        active = cursor.fetchone()
        if active is not None and active[4] == HealthStatus.HEALTHY and active[5]:
            _count(PlacementRule.REUSED, PlacementOutcome.REUSED)
            return Assignment(active[0], meeting_id, region, active[1], active[2], active[3], reused=True)

        if max_participants is None:
            cursor.execute("SELECT max_participants FROM meetings WHERE meeting_id = %s", [meeting_id])
            meeting = cursor.fetchone()
            max_participants = meeting[0] if meeting is not None else 0
        reserve = participants_reserved_for(max_participants)
        candidates = assignment_candidates(region, reserve=reserve)
        healthy_available = bool(candidates) and candidates[0].health_status == HealthStatus.HEALTHY
        if active is not None and active[5] and active[4] == HealthStatus.DEGRADED and not healthy_available:
            # Degraded fallback: a degraded MC that runs the meeting keeps it rather than moving it to another.
            _count(PlacementRule.DEGRADED_FALLBACK, PlacementOutcome.REUSED)
            return Assignment(active[0], meeting_id, region, active[1], active[2], active[3], reused=True,
                              rule=PlacementRule.DEGRADED_FALLBACK)
        if not candidates:
            raise _no_capacity(region, PlacementRule.LEAST_LOADED)

        previous_controller_id = None
        if active is not None:
            cursor.execute(_END_SQL, {"id": active[0], "reason": END_REASON_REASSIGNED})
            ended = cursor.fetchone()
            if ended is not None:
                previous_controller_id = ended[0]

        order = weighted_order(candidates, rng)
        params.update(
            reserve=reserve, gc_id=gc_id(), available=[str(state) for state in AVAILABLE_STATES],
            per_minute=settings.PLACEMENT_MAX_ASSIGNMENTS_PER_MINUTE, window=ASSIGNMENT_WINDOW.total_seconds(),
        )
        cursor.execute(_INSERT_SQL, {**params, "controller_id": order[0].controller_id})
        inserted = cursor.fetchone()
        if inserted is None:
            # A concurrent request assigned the meeting first; its choice stands.
            cursor.execute(_ACTIVE_SQL, params)
            winner = cursor.fetchone()
            if winner is None:
                raise _no_capacity(region, order[0].rule)
            _count(PlacementRule.REUSED, PlacementOutcome.REUSED)
            return Assignment(winner[0], meeting_id, region, winner[1], winner[2], winner[3], reused=True)
        assignment_id = inserted[0]

        taken = _claim_first_with_room(cursor, order, params)
        for _ in range(FRESH_READS):
            if taken is not None:
                break
            # Every candidate filled up or went away since the read (other joins committed their claims in
            # between). Read again before answering 503: the region may have room on an MC that was not among
            # the first few candidates.
            fresh = assignment_candidates(region, reserve=reserve)
            if not fresh:
                break
            taken = _claim_first_with_room(cursor, weighted_order(fresh, rng), params)
        if taken is None:
            # The insert above rolls back with this.
            raise _no_capacity(region, order[0].rule)
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
            "assigned_by_gc_id": gc_id(), "rule": str(chosen.rule), "reserved_participants": reserve,
        }
        outbox_enqueue(aggregate_type="meeting", aggregate_id=str(meeting_id), event_type="meeting_assigned",
                       payload=payload)
        audit_entries.append(AuditEntry(
            event_type="meeting_assigned", action="assign",
            actor_type=ActorType.USER if actor_user_id else ActorType.SYSTEM, actor_user_id=actor_user_id,
            target_type="meeting", target_id=str(meeting_id),
            metadata={key: value for key, value in payload.items() if key != "meeting_id"},
        ))
        _count(chosen.rule, PlacementOutcome.ASSIGNED)
        return Assignment(assignment_id, meeting_id, region, chosen.controller_id, endpoints[0], endpoints[1],
                          reused=False, rule=chosen.rule)
