"""The active-assignment lookup of every join reads one meeting's row through an index on (meeting_id, region),
whatever statistics the planner has: statistics taken while meeting_assignments was empty (a fresh deployment, a
bench's set-up ANALYZE) must not make it walk every active assignment of the fleet. (ANALYZE inside the test's
transaction takes the same statistics of an empty table as VACUUM ANALYZE, which cannot run in one.)"""

from __future__ import annotations

import json
from typing import Any

from django.db import connection
from django.test.utils import CaptureQueriesContext

from meetings.models import Meeting
from meetings.services.assignment import meeting_assign
from tests.factories import make_controller, make_meeting
from tests.plans import copy_members

REGION = "eu-west-1"
ACTIVE = 2_400


def _scans_of(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == relation else []
    for child in plan.get("Plans", ()):
        found += _scans_of(child, relation)
    return found


def _busy_fleet_analyzed_while_empty(owner) -> Meeting:
    """200 MCs and ACTIVE meetings each with an active assignment, meeting_assignments' statistics taken before any
    of them existed; and one more meeting, assigned: the one whose active assignment the tests read."""
    template = make_controller(controller_id="mc-template", region=REGION)
    copy_members("meeting_controllers", "controller_id", template.controller_id, prefix="mc-fleet-", count=200)
    with connection.cursor() as cursor:
        # Statistics of the table while it holds no assignment (ANALYZE, as VACUUM ANALYZE would take them).
        cursor.execute("ANALYZE meeting_assignments")
        # Then a busy fleet: ACTIVE meetings, each with an active assignment on one of the 200 MCs.
        cursor.execute(
            "INSERT INTO meetings (display_name, meeting_code, created_by_user_id) "
            "SELECT 'Busy ' || i, 'busy-' || lpad(i::text, 6, '0'), %s FROM generate_series(1, %s) i",
            [owner.pk, ACTIVE],
        )
        cursor.execute(
            "INSERT INTO meeting_assignments (meeting_id, meeting_controller_id, region, assigned_at, "
            "assigned_by_gc_id) "
            "SELECT m.meeting_id, 'mc-fleet-' || lpad((1 + row_number() OVER () %% 200)::text, 5, '0'), %s, now(), "
            "'gc-test' FROM meetings m WHERE m.meeting_code LIKE 'busy-%%'",
            [REGION],
        )
    meeting = make_meeting(host=owner)
    meeting_assign(meeting_id=meeting.pk, region=REGION)
    return meeting


def _assert_reads_one_meetings_rows(plan: Any) -> None:
    plan = plan if isinstance(plan, list) else json.loads(plan)
    [scan] = _scans_of(plan[0]["Plan"], "meeting_assignments")
    # The meeting is the index condition (a bitmap scan's recheck condition); what is left to filter, if anything,
    # is this meeting's few rows, never every active assignment of the fleet.
    condition = scan.get("Index Cond") or scan.get("Recheck Cond") or ""
    assert scan["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan"), scan
    assert "meeting_id =" in condition, scan
    assert "meeting_id" not in scan.get("Filter", ""), scan


def test_the_active_assignment_lookup_reads_one_meetings_row_with_statistics_of_an_empty_table(owner):
    meeting = _busy_fleet_analyzed_while_empty(owner)

    with CaptureQueriesContext(connection) as captured:
        assert meeting_assign(meeting_id=meeting.pk, region=REGION).reused
    [lookup] = [query["sql"] for query in captured.captured_queries if "FROM meeting_assignments" in query["sql"]]
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {lookup}")
        plan = cursor.fetchone()[0]
    _assert_reads_one_meetings_rows(plan)


def test_the_join_statements_active_assignment_read_reads_one_meetings_row_with_statistics_of_an_empty_table(owner):
    # The meeting_join database function reads the active assignment through meeting_join_active, a SQL function
    # the planner inlines: its plan is the one planned here, with the same statistics.
    meeting = _busy_fleet_analyzed_while_empty(owner)
    with connection.cursor() as cursor:
        # PL/pgSQL plans its statements with parameters, and may keep a generic plan: both plans are checked.
        cursor.execute("PREPARE active_read(uuid, text) AS SELECT * FROM meeting_join_active($1, $2, 60.0)")
        plans = []
        for mode in ("force_custom_plan", "force_generic_plan"):
            cursor.execute("SELECT set_config('plan_cache_mode', %s, true)", [mode])
            cursor.execute("EXPLAIN (FORMAT JSON) EXECUTE active_read(%s::uuid, %s::text)", [meeting.pk, REGION])
            plans.append(cursor.fetchone()[0])
        cursor.execute("DEALLOCATE active_read")
    for plan in plans:
        _assert_reads_one_meetings_rows(plan)
