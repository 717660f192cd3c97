"""What an active assignment holds on its meeting controller (MC), and how every path gives it back.

An assignment takes, on its MC:
- one meeting, counted in `assigned_since_heartbeat` (in-flight accounting) until the MC's next
  heartbeat that reports its counts; that report's `current_meetings` then includes it and the heartbeat
  resets the in-flight count (controllers.services.registration.beats_record). Placement ranks and caps MCs by
  the effective load `current_meetings + assigned_since_heartbeat`, so a burst of joins between two heartbeats
  does not pile onto the MC that looked emptiest.
- for a large meeting (max_participants above PLACEMENT_LARGE_MEETING_THRESHOLD), its expected size in
  `reserved_participants`, recorded on the assignment row too so that the exact amount is given back.

Every statement that ends active assignments gives both back in the same statement with `release_cte_sql`,
and points meetings.assigned_controller_id away from the MC (`unassign_cte_sql`), so the MC's load and the
meeting row never keep a meeting that no longer runs there. A meeting ended before the heartbeat that would
have counted it is taken off the in-flight count first, then off the reported count.
"""

from __future__ import annotations

from enum import StrEnum


class PlacementRule(StrEnum):
    """Which rule chose the MC of an assignment: the `rule` of meeting_assigned audit rows and outbox events and
    of the darktower_assignments{rule,outcome} metric."""

    REUSED = "reused"  # an active assignment on a healthy MC with a fresh heartbeat (or a concurrent join's)
    LEAST_LOADED = "least_loaded"  # weighted draw among the least-loaded healthy MCs
    DEGRADED_FALLBACK = "degraded_fallback"  # no healthy MC: a degraded one keeps or takes the meeting
    DRAIN_MOVE = "drain_move"  # a drain deadline moved the meeting to the operator's target MC


class PlacementOutcome(StrEnum):
    ASSIGNED = "assigned"  # a new assignment row
    REUSED = "reused"  # the active assignment stands
    NO_CAPACITY = "no_capacity"  # no MC could take the meeting (NoCapacity)


# {ended} names a CTE of the caller whose rows are the assignments just ended, with columns
# meeting_controller_id and reserved_participants. One UPDATE per MC (grouped), so an MC losing many meetings
# at once is written once.
_RELEASE_CTE_SQL = """
released AS (
    UPDATE meeting_controllers mc
    SET assigned_since_heartbeat = greatest(mc.assigned_since_heartbeat - e.meetings, 0),
        current_meetings = greatest(mc.current_meetings - greatest(e.meetings - mc.assigned_since_heartbeat, 0), 0),
        reserved_participants = greatest(mc.reserved_participants - e.participants, 0)
    FROM (
        SELECT meeting_controller_id, count(*) AS meetings, coalesce(sum(reserved_participants), 0) AS participants
        FROM {ended} GROUP BY meeting_controller_id
    ) e
    WHERE mc.controller_id = e.meeting_controller_id
    RETURNING mc.controller_id
)
"""

# {ended} as above, with a meeting_id column. Only meetings still pointing at the MC whose assignment ended:
# a meeting already reassigned elsewhere (another region's assignment, a drain move) keeps its new pointer.
_UNASSIGN_CTE_SQL = """
unassigned AS (
    UPDATE meetings m SET assigned_controller_id = NULL, assigned_region = NULL
    FROM {ended} e
    WHERE m.meeting_id = e.meeting_id AND m.assigned_controller_id = e.meeting_controller_id
    RETURNING m.meeting_id
)
"""


def release_cte_sql(ended: str) -> str:
    """The `released` CTE: give back what the assignments of CTE `ended` held on their MCs."""
    return _RELEASE_CTE_SQL.format(ended=ended)


def unassign_cte_sql(ended: str) -> str:
    """The `unassigned` CTE: clear meetings.assigned_controller_id / assigned_region of the meetings of CTE
    `ended` that still point at the MC whose assignment ended."""
    return _UNASSIGN_CTE_SQL.format(ended=ended)
