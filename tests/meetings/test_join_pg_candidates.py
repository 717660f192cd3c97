"""The candidate read of a join's placement (meeting_join_candidates, inside the meeting_join statement) is planned
with that statement, once per session, and reads only the region's placeable MCs, with a plan made knowing the
region (custom) or not (generic, which PL/pgSQL may keep): never the fleet of every region through the heartbeat
index, whose condition every beating MC passes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.db import connection

from tests.factories import make_controller
from tests.plans import copy_members

# A fleet spread over many regions, as a deployment's is: the region's MCs are a small share of the table, where
# reading only them is what a plan must do (with a handful of regions, reading all of a small table can be cheaper).
REGIONS = ("eu-west-1", *(f"zz-region-{number}" for number in range(1, 20)))
PER_REGION = 100
# The function's arguments: region, stale seconds, assignments per minute (0: no limit), window seconds, seats
# reserved (0: none), candidates.
_CANDIDATES = "SELECT * FROM meeting_join_candidates($1, $2, $3, $4, $5, $6)"
_TYPES = "text, double precision, integer, double precision, integer, integer"


def _scans_of(plan: dict[str, Any], relation: str) -> list[dict[str, Any]]:
    found = [plan] if plan.get("Relation Name") == relation else []
    for child in plan.get("Plans", ()):
        found += _scans_of(child, relation)
    return found


@pytest.mark.django_db
@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_the_candidate_read_is_inlined_and_reads_only_the_regions_mcs(mode):
    for region in REGIONS:
        template = make_controller(controller_id=f"mc-{region}-template", region=region)
        copy_members("meeting_controllers", "controller_id", template.controller_id, prefix=f"mc-{region}-",
                     count=PER_REGION - 1)
    with connection.cursor() as cursor:
        cursor.execute(f"PREPARE candidates({_TYPES}) AS {_CANDIDATES}")
        cursor.execute("SELECT set_config('plan_cache_mode', %s, true)", [mode])
        cursor.execute("EXPLAIN (ANALYZE, FORMAT JSON) EXECUTE candidates('eu-west-1', 60.0, 0, 60.0, 0, 5)")
        plan = cursor.fetchone()[0]
        cursor.execute("DEALLOCATE candidates")
    plan = plan if isinstance(plan, list) else json.loads(plan)
    scans = _scans_of(plan[0]["Plan"], "meeting_controllers")
    # A function the planner does not inline is a Function Scan, planned again on every call.
    assert len(scans) == 1, f"the candidate read is not planned with the join's statement: {plan[0]['Plan']}"
    [scan] = scans
    condition = scan.get("Index Cond") or scan.get("Recheck Cond") or ""
    assert "region" in condition, scan
    assert "last_heartbeat_at" not in condition, scan
    # The rows it reads are the region's: what the filter removed and what it kept.
    read = scan["Actual Rows"] + scan.get("Rows Removed by Filter", 0) + scan.get("Rows Removed by Index Recheck", 0)
    assert read <= PER_REGION, scan
    assert plan[0]["Plan"]["Actual Rows"] == 5
