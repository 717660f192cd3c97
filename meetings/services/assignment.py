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

A join applies these rules in the database, in the one statement that admits it (the meeting_join function of
meetings migration 0008, which spells them out again in SQL: a change to a rule here is a change there too).
Only a join whose MC must be asked (MC_ASSIGN_CALLS) runs this module inside its own transaction
(meeting_assign_in_transaction): no savepoint of its own, the meeting's max_participants from the row the join
already holds, and the audit row handed back so that the join writes it in one INSERT with its own. The hot path
is raw SQL: the ORM's query compilation cost more CPU than the database spent on the statements.

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

import logging
import random
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from django.conf import settings
from django.db import DatabaseError, OperationalError, connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.transaction import TransactionManagementError

from accounts.services.service_tokens import gc_service_token
from audit.models import ActorType, AuditResult
from audit.services import AuditEntry, audit_record_many, outbox_enqueue
from controllers.health_rules import placeable_sql
from controllers.mc_client import McAnswer, MediaHandlerChoice, mc_assign_meeting
from controllers.members import CONTROLLERS, HANDLERS
from controllers.models import AVAILABLE_STATES, HealthStatus
from controllers.services.capacity import PlacementOutcome, PlacementRule, release_cte_sql
from darktower.errors import NoCapacity, NoMediaHandler, PlacementBusy
from darktower.metrics import ASSIGNMENTS
from darktower.process import gc_id
from meetings.models import Meeting, MeetingStatus

END_REASON_REASSIGNED = "reassigned"
# The MC refused the meeting or did not answer in time (AssignMeetingWithMh).
END_REASON_MC_REFUSED = "mc_refused"
# A pending assignment whose placer went away before the MC answered.
END_REASON_ABANDONED = "abandoned"
# MCs asked per placement before answering 503.
MC_ASSIGN_ATTEMPTS = 3
# Media handlers chosen per meeting, all active at once.
MEDIA_HANDLERS_PER_MEETING = 2
# Advisory lock namespace (the first int4 key) of "placing meeting M in region R".
_PLACEMENT_LOCK_CLASS = 0x44540001
MAX_WEIGHT_LOAD = 0.99  # a nearly full MC keeps a small chance, never zero weight
# Fresh reads of the region after every candidate of a draw filled up: each failed claim means a concurrent
# join took that MC's last slot (claims wait for each other's commit), so a few rounds find any room left.
FRESH_READS = 3
# The per-MC assignment cap counts assignments in fixed windows of this length, each starting at the first
# assignment after the previous window ended.
ASSIGNMENT_WINDOW = timedelta(minutes=1)

_rng = random.SystemRandom()
logger = logging.getLogger(__name__)


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
    # The media handlers the MC was told of (empty for assignments made without asking the MC).
    media_handlers: tuple[MediaHandlerChoice, ...] = ()


class PlacementNeeded(Exception):
    """The meeting has no usable MC in the region and the MC must be asked (MC_ASSIGN_CALLS): the caller leaves
    its transaction and calls meeting_place, which must not run inside one."""

    def __init__(self, meeting_id: uuid.UUID, max_participants: int | None):
        super().__init__()
        self.meeting_id = meeting_id
        self.max_participants = max_participants


def stale_threshold() -> timedelta:
    return timedelta(seconds=settings.HEARTBEAT_STALE_THRESHOLD_SECONDS)


def participants_reserved_for(max_participants: int) -> int:
    """The participants a meeting reserves on its MC: its whole max_participants when that is above
    PLACEMENT_LARGE_MEETING_THRESHOLD (the expected size of a large meeting), else none."""
    return max_participants if max_participants > settings.PLACEMENT_LARGE_MEETING_THRESHOLD else 0


# Step 2 of the module docstring. The placement rule (controllers.health_rules.placeable_sql: AVAILABLE_STATES,
# a fresh beat) spelt out beside the region, so that the planner can prove the partial index
# idx_meeting_controllers_available's predicate; the ordering is "healthy first, then the effective load ratio,
# ties to the newest heartbeat".
_CANDIDATES_SQL = """
SELECT controller_id, health_status, current_meetings, max_meetings, assigned_since_heartbeat
FROM meeting_controllers
WHERE region = %(region)s AND {placeable}
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
    placeable=placeable_sql(CONTROLLERS, clock="statement_timestamp()"), healthy=HealthStatus.HEALTHY
)


def assignment_candidates(region: str, *, limit: int | None = None, reserve: int = 0) -> list[Candidate]:
    """Up to `limit` least-loaded candidates with room (module docstring, step 2) for a meeting that reserves
    `reserve` participants: healthy ones if any exist, else degraded ones."""
    params: dict[str, str | int | float] = {
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


# The plan must not depend on when the table was last analyzed. With `ended_at IS NULL` in the scan, every partial
# index on active assignments qualifies for a full walk, and statistics taken while the table was empty rate them
# all alike: the planner may walk idx_assignments_active_by_mc and filter every active assignment of the fleet.
# So the meeting's rows in the region are read apart (a MATERIALIZED CTE is planned on its own, and the active
# condition stays outside it), where only the index on meeting_id serves them: a meeting has few assignments.
_ACTIVE_SQL = """
WITH a AS MATERIALIZED (
    SELECT id, meeting_controller_id, pending_until, media_handler_ids, ended_at
    FROM meeting_assignments
    WHERE meeting_id = %(meeting_id)s AND region = %(region)s
)
SELECT a.id, a.meeting_controller_id, mc.grpc_endpoint, mc.webtransport_endpoint, mc.health_status,
       mc.last_heartbeat_at > now() - make_interval(secs => %(stale)s) AS fresh,
       a.pending_until IS NOT NULL AS pending,
       CASE WHEN a.media_handler_ids IS NULL THEN NULL ELSE (
           SELECT json_agg(json_build_array(h.handler_id, coalesce(h.webtransport_endpoint, ''),
                                            coalesce(h.grpc_endpoint, ''))
                           ORDER BY array_position(a.media_handler_ids, h.handler_id))
           FROM media_handlers h WHERE h.handler_id = ANY(a.media_handler_ids)) END AS media_handlers
FROM a
JOIN meeting_controllers mc ON mc.controller_id = a.meeting_controller_id
WHERE a.ended_at IS NULL
"""
# Columns of _ACTIVE_SQL.
_ID, _CONTROLLER, _GRPC, _WEBTRANSPORT, _HEALTH, _FRESH, _PENDING, _HANDLERS = range(8)
# The join reads the active assignment in the statement that locks the meeting row and counts its seats (the
# meeting_join database function, meetings migration 0008, which reads it as _ACTIVE_SQL does): these columns, in
# this order, handed to meeting_assign_in_transaction as an ActiveRead.
ACTIVE_ASSIGNMENT_COLUMNS = 8


@dataclass(frozen=True)
class ActiveRead:
    """The active assignment's row in _ACTIVE_SQL's columns (None when the meeting has no active assignment in the
    region), read by the caller inside its transaction."""

    row: tuple[Any, ...] | None


def assignment_joined(read: ActiveRead, *, meeting_id: uuid.UUID, region: str, rule: str, assigned: bool) -> Assignment:
    """The assignment a join's statement answered in _ACTIVE_SQL's columns (the meeting_join database function,
    which applies this module's rules): a new one (`assigned`) or one that stands, reused under `rule`; counted in
    darktower_assignments once the caller's transaction commits."""
    row = read.row
    assert row is not None  # the statement answers an assignment with every join it admits
    _count(rule, PlacementOutcome.ASSIGNED if assigned else PlacementOutcome.REUSED)
    handlers = tuple(MediaHandlerChoice(*handler) for handler in (row[_HANDLERS] or ()))
    return Assignment(row[_ID], meeting_id, region, row[_CONTROLLER], row[_GRPC], row[_WEBTRANSPORT],
                      reused=not assigned, rule=rule, media_handlers=handlers)


def no_capacity(region: str, rule: str) -> NoCapacity:
    """The NoCapacity error of a placement that found no MC with room (counted at once: nothing commits)."""
    return _no_capacity(region, rule)


def _active_assignment(row: tuple[Any, ...], meeting_id: uuid.UUID, region: str, *, rule: str) -> Assignment:
    handlers = tuple(MediaHandlerChoice(*handler) for handler in (row[_HANDLERS] or ()))
    return Assignment(row[_ID], meeting_id, region, row[_CONTROLLER], row[_GRPC], row[_WEBTRANSPORT], reused=True,
                      rule=rule, media_handlers=handlers)

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
    (meeting_id, meeting_controller_id, region, assigned_at, assigned_by_gc_id, reserved_participants,
     pending_until, media_handler_ids)
VALUES (%(meeting_id)s, %(controller_id)s, %(region)s, now(), %(gc_id)s, %(reserve)s,
        now() + make_interval(secs => %(pending)s), %(media_handler_ids)s)
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


def _claim_first_with_room(
    cursor: CursorWrapper, order: Sequence[Candidate], params: dict[str, Any]
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
    """The MC that runs `meeting_id` in `region`, assigning one if needed (see the module docstring), asking
    the MC first with MC_ASSIGN_CALLS (meeting_place). Raises NoCapacity when no MC in the region can take the
    meeting."""
    audit_entries: list[AuditEntry] = []
    try:
        with transaction.atomic():
            assignment = meeting_assign_in_transaction(
                meeting_id=meeting_id, region=region, actor_user_id=actor_user_id, rng=rng,
                audit_entries=audit_entries,
            )
            audit_record_many(audit_entries)
    except PlacementNeeded:
        return meeting_place(meeting_id=meeting_id, region=region, actor_user_id=actor_user_id, rng=rng)
    return assignment


def meeting_assign_in_transaction(
    *,
    meeting_id: uuid.UUID,
    region: str,
    audit_entries: list[AuditEntry],
    actor_user_id: uuid.UUID | None = None,
    rng: random.Random | None = None,
    max_participants: int | None = None,
    meeting: Meeting | None = None,
    active: ActiveRead | None = None,
) -> Assignment:
    """meeting_assign inside the caller's transaction (the join's), without a savepoint of its own: an error
    leaves that transaction to be rolled back, so the caller lets it propagate. `max_participants` is the
    meeting's when the caller has read it already (else it is read here). The audit row of a new assignment is
    appended to `audit_entries`; the caller writes it in the same transaction.

    `meeting`: the caller's locked copy of the meeting row (the join's). A new assignment then also starts the
    meeting if it is scheduled, in the same UPDATE that points it at its MC, and brings this copy up to date.

    `active`: the active assignment as the caller read it in this transaction (in _ACTIVE_SQL's columns), so that it
    is not read again; read here when not given.

    With MC_ASSIGN_CALLS, an assignment that must be made raises PlacementNeeded instead (nothing written):
    asking the MC must not happen inside the caller's transaction, so the caller calls meeting_place outside it
    and comes back."""
    if not connection.in_atomic_block:
        raise TransactionManagementError("meeting_assign_in_transaction needs the caller's transaction.")
    params: dict[str, Any] = {
        "meeting_id": meeting_id, "region": region, "stale": stale_threshold().total_seconds(),
    }
    with connection.cursor() as cursor:
        reused, row, candidates, reserve = _reuse_or_candidates(cursor, params, max_participants, active)
        if reused is not None:
            return reused
        if not candidates:
            raise _no_capacity(region, PlacementRule.LEAST_LOADED)
        if settings.MC_ASSIGN_CALLS:
            raise PlacementNeeded(meeting_id, max_participants)
        _lock_for_reassignment(cursor, row, candidates)
        previous_controller_id = _end_active(cursor, row, END_REASON_REASSIGNED)
        params.update(reserve=reserve, pending=None, media_handler_ids=None)
        placed = _insert_and_claim(cursor, params, candidates, rng)
        if isinstance(placed, Assignment):
            return placed
        assignment_id, chosen, endpoints = placed
        cursor.execute(_POINT_SQL, {"controller_id": chosen.controller_id, "region": region,
                                    "meeting_id": meeting_id, "start": meeting is not None})
        changed = cursor.fetchone()
        if meeting is not None and changed is not None:
            for name, value in zip(MEETING_CHANGED, changed, strict=True):
                setattr(meeting, name, value)
        audit_entries.append(_assigned_records(
            meeting_id=meeting_id, region=region, controller_id=chosen.controller_id, rule=chosen.rule,
            assignment_id=assignment_id, previous_controller_id=previous_controller_id, reserve=reserve,
            actor_user_id=actor_user_id,
        ))
        _count(chosen.rule, PlacementOutcome.ASSIGNED)
        return Assignment(assignment_id, meeting_id, region, chosen.controller_id, endpoints[0], endpoints[1],
                          reused=False, rule=chosen.rule)


# The meeting's columns a new assignment changes: its MC, and for a join (`start`) the start of a scheduled
# meeting; updated_at by the touch trigger.
MEETING_CHANGED = ("status", "actual_start_time", "assigned_controller_id", "assigned_region", "updated_at")
_POINT_SQL = f"""
UPDATE meetings SET assigned_controller_id = %(controller_id)s, assigned_region = %(region)s,
    status = CASE WHEN %(start)s AND status = '{MeetingStatus.SCHEDULED}' THEN '{MeetingStatus.ACTIVE}' ELSE status END,
    actual_start_time = CASE WHEN %(start)s AND status = '{MeetingStatus.SCHEDULED}' THEN statement_timestamp()
                             ELSE actual_start_time END
WHERE meeting_id = %(meeting_id)s
RETURNING {", ".join(MEETING_CHANGED)}
"""  # noqa: S608 -- constants only


def _reuse_or_candidates(
    cursor: Any, params: dict[str, Any], max_participants: int | None, read: ActiveRead | None = None
) -> tuple[Assignment | None, tuple[Any, ...] | None, list[Candidate], int]:
    """Steps 1-2 of the module docstring: the active assignment if it stands (reused, or kept by a degraded MC
    when no healthy one exists), else the active row (to be ended), the candidates and the reservation. `read`:
    the active row as the caller read it in this transaction (else it is read here)."""
    meeting_id, region = params["meeting_id"], params["region"]
    if read is None:
        cursor.execute(_ACTIVE_SQL, params)
        active = cursor.fetchone()
    else:
        active = read.row
    usable = active is not None and active[_FRESH] and not active[_PENDING]
    if usable and active[_HEALTH] == HealthStatus.HEALTHY:
        _count(PlacementRule.REUSED, PlacementOutcome.REUSED)
        return _active_assignment(active, meeting_id, region, rule=PlacementRule.REUSED), active, [], 0
    if max_participants is None:
        cursor.execute("SELECT max_participants FROM meetings WHERE meeting_id = %s", [meeting_id])
        meeting = cursor.fetchone()
        max_participants = meeting[0] if meeting is not None else 0
    reserve = participants_reserved_for(max_participants)
    candidates = assignment_candidates(region, reserve=reserve)
    healthy_available = bool(candidates) and candidates[0].health_status == HealthStatus.HEALTHY
    if usable and active[_HEALTH] == HealthStatus.DEGRADED and not healthy_available:
        # Degraded fallback: a degraded MC that runs the meeting keeps it rather than moving it to another.
        _count(PlacementRule.DEGRADED_FALLBACK, PlacementOutcome.REUSED)
        return _active_assignment(active, meeting_id, region, rule=PlacementRule.DEGRADED_FALLBACK), active, [], 0
    return None, active, candidates, reserve


# A reassignment writes two MC rows: the old one (its slot given back) and the one it claims. The heartbeat flush
# locks the rows of its batch in controller_id order; so does this, for the old MC and every candidate at once,
# before either is changed: a flush or another reassignment holding one of them while it waits for the other
# would otherwise deadlock with it. Candidates that are not claimed stay locked until the commit, a few
# milliseconds; a first join (no old MC) claims a single row and needs none of this. The fresh reads after every
# locked candidate filled up may still claim an MC out of this order; a deadlock there ends one transaction
# (503, retried by the client) and never oversells an MC.
_LOCK_CONTROLLERS_SQL = """
SELECT 1 FROM meeting_controllers WHERE controller_id = ANY(%s) ORDER BY controller_id FOR UPDATE
"""


def _lock_for_reassignment(cursor: Any, active: tuple[Any, ...] | None, candidates: Sequence[Candidate]) -> None:
    """Lock the old MC's row and the candidates' in controller_id order (see _LOCK_CONTROLLERS_SQL)."""
    if active is None:
        return
    cursor.execute(_LOCK_CONTROLLERS_SQL,
                   [sorted({active[_CONTROLLER], *(candidate.controller_id for candidate in candidates)})])


def _end_active(cursor: Any, active: tuple[Any, ...] | None, reason: str) -> str | None:
    """End the active assignment that no longer stands, giving back what it held; its MC's id if it ended here."""
    if active is None:
        return None
    cursor.execute(_END_SQL, {"id": active[_ID], "reason": reason})
    ended = cursor.fetchone()
    return ended[0] if ended is not None else None


def _insert_and_claim(
    cursor: Any, params: dict[str, Any], candidates: Sequence[Candidate], rng: random.Random | None
) -> Assignment | tuple[int, Candidate, tuple[str, str | None]]:
    """Steps 3-4: insert the assignment for the weighted choice and claim an MC's slot (compare-and-set, falling
    back along the draw and to fresh reads). A concurrent request's assignment, when it inserted first, is
    returned as it stands (reused); NoCapacity when every candidate filled up."""
    meeting_id, region = params["meeting_id"], params["region"]
    order = weighted_order(candidates, rng)
    params.update(
        gc_id=gc_id(), available=[str(state) for state in AVAILABLE_STATES],
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
        return _active_assignment(winner, meeting_id, region, rule=PlacementRule.REUSED)
    assignment_id = inserted[0]

    taken = _claim_first_with_room(cursor, order, params)
    for _ in range(FRESH_READS):
        if taken is not None:
            break
        # Every candidate filled up or went away since the read (other joins committed their claims in
        # between). Read again before answering 503: the region may have room on an MC that was not among
        # the first few candidates.
        fresh = [c for c in assignment_candidates(region, reserve=params["reserve"])
                 if c.controller_id not in params.get("exclude", ())]
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
    return assignment_id, chosen, endpoints


def _assigned_records(
    *,
    meeting_id: uuid.UUID,
    region: str,
    controller_id: str,
    rule: str,
    assignment_id: int,
    previous_controller_id: str | None,
    reserve: int,
    actor_user_id: uuid.UUID | None,
    asked: dict[str, Any] | None = None,
) -> AuditEntry:
    """The meeting_assigned outbox event (written here) and its audit row (returned, for the caller to write in
    the same transaction). `asked`: how the MC came to accept it, when MCs were asked."""
    payload = {
        "meeting_id": str(meeting_id), "region": region, "controller_id": controller_id,
        "previous_controller_id": previous_controller_id, "assignment_id": assignment_id,
        "assigned_by_gc_id": gc_id(), "rule": str(rule), "reserved_participants": reserve, **(asked or {}),
    }
    outbox_enqueue(aggregate_type="meeting", aggregate_id=str(meeting_id), event_type="meeting_assigned",
                   payload=payload)
    return AuditEntry(
        event_type="meeting_assigned", action="assign",
        actor_type=ActorType.USER if actor_user_id else ActorType.SYSTEM, actor_user_id=actor_user_id,
        target_type="meeting", target_id=str(meeting_id),
        metadata={key: value for key, value in payload.items() if key != "meeting_id"},
    )


# --- Placement that asks the MC (MC_ASSIGN_CALLS) -------------------------------------------------------------

# The MC's answer decides: accepted -> the pending row stands; otherwise it is ended and its slot given back.
_ACCEPT_SQL = """
UPDATE meeting_assignments SET pending_until = NULL
WHERE id = %(id)s AND ended_at IS NULL AND pending_until IS NOT NULL
RETURNING id
"""
# An MC that refused (or did not answer) is taken out of placement until its next heartbeat reports its counts:
# its in-flight count is raised to fill it, and the heartbeat's reconciliation (which counts only real
# assignments) brings it back. Every GC process sees it at once.
_HOLD_FULL_SQL = """
UPDATE meeting_controllers
SET assigned_since_heartbeat = greatest(assigned_since_heartbeat, max_meetings - current_meetings)
WHERE controller_id = %s
"""

_HANDLERS_SQL = f"""
SELECT handler_id, coalesce(webtransport_endpoint, ''), coalesce(grpc_endpoint, ''), current_streams, max_streams
FROM media_handlers
WHERE region = %(region)s AND {placeable_sql(HANDLERS)}
  AND current_streams < max_streams
ORDER BY current_streams::double precision / max_streams::double precision, last_heartbeat_at DESC, handler_id
LIMIT %(limit)s
"""  # noqa: S608 -- constants only


def media_handlers_choose(region: str, *, rng: random.Random | None = None) -> list[MediaHandlerChoice]:
    """Up to MEDIA_HANDLERS_PER_MEETING media handlers for a new meeting in `region`: drawn from the
    PLACEMENT_CANDIDATES least-loaded healthy ones with a fresh load report and a free stream, each with weight
    1 - min(load, 0.99) (the MC draw's rule). Empty when the region has none."""
    rng = rng or _rng
    with connection.cursor() as cursor:
        cursor.execute(_HANDLERS_SQL, {"region": region, "stale": stale_threshold().total_seconds(),
                                       "limit": settings.PLACEMENT_CANDIDATES})
        rows = cursor.fetchall()
    remaining = [(MediaHandlerChoice(*row[:3]), 1.0 - min(row[3] / row[4], MAX_WEIGHT_LOAD)) for row in rows]
    chosen: list[MediaHandlerChoice] = []
    while remaining and len(chosen) < MEDIA_HANDLERS_PER_MEETING:
        index = rng.choices(range(len(remaining)), weights=[weight for _, weight in remaining])[0]
        chosen.append(remaining.pop(index)[0])
    return chosen


@dataclass(frozen=True)
class _Asked:
    """One MC asked during a placement."""

    controller_id: str
    answer: McAnswer


# The advisory lock's two int4 keys: the namespace and a hash of (meeting, region). A hash collision only makes
# two placements wait for each other.
_LOCK_KEY_SQL = "%(lock_class)s, hashtext(%(meeting_id)s::text || '/' || %(region)s)"


def _placement_lock(meeting_id: uuid.UUID, region: str, wait_seconds: float) -> None:
    """Take this session's advisory lock on placing `meeting_id` in `region`, waiting at most `wait_seconds`
    for the request that holds it (PlacementBusy after that). Session-level, so it outlives the transactions
    of the placement; placement_unlock gives it back, and a process that dies gives it back with its session."""
    params: dict[str, str | int] = {
        "lock_class": _PLACEMENT_LOCK_CLASS, "meeting_id": str(meeting_id), "region": region,
        "timeout": f"{max(1, int(wait_seconds * 1000))}ms",
    }
    try:
        with transaction.atomic(), connection.cursor() as cursor:
            cursor.execute("SELECT set_config('lock_timeout', %(timeout)s, true)", params)
            cursor.execute(f"SELECT pg_advisory_lock({_LOCK_KEY_SQL})", params)
    except OperationalError as exc:
        if getattr(exc.__cause__, "sqlstate", None) == "55P03":  # lock_not_available: the wait ran out
            raise PlacementBusy("The meeting is being placed on a meeting controller; retry shortly.") from None
        raise


def placement_lock_try(meeting_id: uuid.UUID, region: str) -> bool:
    """Take the placement lock of (meeting, region) if nobody holds it (a drain move that tells the target MC
    holds it until the move commits, so no join places the meeting elsewhere meanwhile)."""
    params: dict[str, str | int] = {
        "lock_class": _PLACEMENT_LOCK_CLASS, "meeting_id": str(meeting_id), "region": region
    }
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT pg_try_advisory_lock({_LOCK_KEY_SQL})", params)
        return bool(cursor.fetchone()[0])


def placement_lock_release(meeting_id: uuid.UUID, region: str) -> None:
    """Give back a placement lock (meeting_place's, or one taken by placement_lock_try)."""
    params: dict[str, str | int] = {
        "lock_class": _PLACEMENT_LOCK_CLASS, "meeting_id": str(meeting_id), "region": region
    }
    try:
        with connection.cursor() as cursor:
            cursor.execute(f"SELECT pg_advisory_unlock({_LOCK_KEY_SQL})", params)
    except DatabaseError:
        # The connection is gone, and with its session the lock: nothing is left to give back.
        logger.warning("placement lock not released: the database connection failed", exc_info=True)


def meeting_place(
    *,
    meeting_id: uuid.UUID,
    region: str,
    actor_user_id: uuid.UUID | None = None,
    max_participants: int | None = None,
    rng: random.Random | None = None,
) -> Assignment:
    """The MC that runs `meeting_id` in `region`, asking a new one to take it when needed (MC_ASSIGN_CALLS).

    Exactly one request at a time places a meeting in a region: it holds an advisory lock on (meeting, region)
    while it works, and concurrent requests for the same meeting wait for it (at most the time it may take,
    then PlacementBusy) and then find its assignment. Requests for other meetings never wait for it.

    Under the lock: an active assignment that stands is returned as it is. Otherwise media handlers are chosen
    (none: NoMediaHandler, and no MC is asked), and up to MC_ASSIGN_ATTEMPTS MCs are tried in turn, each in
    three steps with no transaction open across the call:
    1. one transaction ends the assignment that no longer stands, inserts a pending one for the chosen MC and
       claims its slot, exactly as an assignment without a call does;
    2. AssignMeetingWithMh to that MC (controllers.mc_client), within MC_ASSIGN_TIMEOUT_SECONDS;
    3. one transaction records the answer: accepted -> the assignment stands (meeting pointer, meeting_assigned
       outbox event and audit row naming the attempts); refused, failed or timed out -> the pending row is
       ended (mc_refused), its slot given back, the MC held full until its next heartbeat, a failure audit row
       written, and the next MC is tried. Every MC refused: NoCapacity.
    An MC is told of a meeting at most once per placement, and never of one another MC has accepted.
    """
    if connection.in_atomic_block:
        raise TransactionManagementError("meeting_place asks an MC and must not run inside a transaction.")
    wait = settings.MC_ASSIGN_TIMEOUT_SECONDS * MC_ASSIGN_ATTEMPTS + 1.0
    _placement_lock(meeting_id, region, wait)
    try:
        return _place_locked(meeting_id=meeting_id, region=region, actor_user_id=actor_user_id,
                             max_participants=max_participants, rng=rng)
    finally:
        placement_lock_release(meeting_id, region)


def _place_locked(
    *,
    meeting_id: uuid.UUID,
    region: str,
    actor_user_id: uuid.UUID | None,
    max_participants: int | None,
    rng: random.Random | None,
) -> Assignment:
    asked: list[_Asked] = []
    handlers: list[MediaHandlerChoice] | None = None
    previous_controller_id: str | None = None
    for attempt in range(1, MC_ASSIGN_ATTEMPTS + 1):
        params: dict[str, Any] = {
            "meeting_id": meeting_id, "region": region, "stale": stale_threshold().total_seconds(),
        }
        with transaction.atomic(), connection.cursor() as cursor:
            reused, active, candidates, reserve = _reuse_or_candidates(cursor, params, max_participants)
            if reused is not None:
                return reused
            excluded = {entry.controller_id for entry in asked}
            candidates = [c for c in candidates if c.controller_id not in excluded]
            if handlers is None:
                handlers = media_handlers_choose(region, rng=rng)
            if not handlers:
                raise NoMediaHandler(f"No media handler is available in region {region}.")
            if not candidates:
                break
            _lock_for_reassignment(cursor, active, candidates)
            # We hold the placement lock: a pending row here was left by a placer that went away.
            ended = _end_active(
                cursor, active, END_REASON_ABANDONED if active is not None and active[_PENDING]
                else END_REASON_REASSIGNED,
            )
            previous_controller_id = previous_controller_id or ended
            params.update(reserve=reserve, exclude=excluded, media_handler_ids=[h.handler_id for h in handlers],
                          pending=settings.MC_ASSIGN_TIMEOUT_SECONDS + 1.0)
            placed = _insert_and_claim(cursor, params, candidates, rng)
            if isinstance(placed, Assignment):  # cannot happen under the lock unless another GC skips it
                return placed
            assignment_id, chosen, endpoints = placed

        answer = mc_assign_meeting(
            endpoint=endpoints[0], meeting_id=meeting_id, media_handlers=handlers, token=gc_service_token(),
            requesting_gc_id=gc_id(),
        )
        asked.append(_Asked(chosen.controller_id, answer))
        with transaction.atomic(), connection.cursor() as cursor:
            if answer.accepted:
                cursor.execute(_ACCEPT_SQL, {"id": assignment_id})
                if cursor.fetchone() is not None:
                    cursor.execute(
                        "UPDATE meetings SET assigned_controller_id = %s, assigned_region = %s WHERE meeting_id = %s",
                        [chosen.controller_id, region, meeting_id],
                    )
                    audit_record_many([_assigned_records(
                        meeting_id=meeting_id, region=region, controller_id=chosen.controller_id, rule=chosen.rule,
                        assignment_id=assignment_id, previous_controller_id=previous_controller_id, reserve=reserve,
                        actor_user_id=actor_user_id, asked=_asked_summary(asked, handlers),
                    )])
                    _count(chosen.rule, PlacementOutcome.ASSIGNED)
                    return Assignment(assignment_id, meeting_id, region, chosen.controller_id, endpoints[0],
                                      endpoints[1], reused=False, rule=chosen.rule, media_handlers=tuple(handlers))
                # Ended while the MC answered (the meeting ended, the MC went away): place again.
                continue
            _end_active(cursor, (assignment_id,), END_REASON_MC_REFUSED)
            cursor.execute(_HOLD_FULL_SQL, [chosen.controller_id])
            audit_record_many([AuditEntry(
                event_type="meeting_assignment_refused", action="assign", result=AuditResult.FAILURE,
                actor_type=ActorType.USER if actor_user_id else ActorType.SYSTEM, actor_user_id=actor_user_id,
                target_type="meeting", target_id=str(meeting_id),
                error_message=f"{answer.outcome}: {answer.reason}",
                metadata={"region": region, "controller_id": chosen.controller_id, "attempt": attempt,
                          "outcome": str(answer.outcome), "reason": answer.reason},
            )])
    raise _no_capacity(region, PlacementRule.LEAST_LOADED)


def _asked_summary(asked: Sequence[_Asked], handlers: Sequence[MediaHandlerChoice]) -> dict[str, Any]:
    return {
        "attempts": len(asked),
        "refused": [{"controller_id": entry.controller_id, "outcome": str(entry.answer.outcome),
                     "reason": entry.answer.reason} for entry in asked if not entry.answer.accepted],
        "media_handler_ids": [handler.handler_id for handler in handlers],
    }
