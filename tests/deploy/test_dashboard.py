"""The shipped Grafana dashboard: importable (one JSON document, the data source a variable, panels laid out on
the grid), every query parses as PromQL (promtool checks it as a recording rule), and it shows what operators
look at first."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from tests.deploy.conftest import dashboard, dashboard_exprs, dashboard_panels, run_promtool

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}


def test_the_dashboard_is_importable_with_the_data_source_as_a_variable():
    board = dashboard()
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}

    assert board["uid"] and board["title"] and isinstance(board["schemaVersion"], int)
    assert "id" not in board  # an id belongs to one Grafana instance; import assigns its own
    assert (variables["datasource"]["type"], variables["datasource"]["query"]) == ("datasource", "prometheus")
    assert variables["region"]["datasource"] == DATASOURCE
    assert variables["region"]["includeAll"] and variables["region"]["allValue"] == ".*"
    ids = [panel["id"] for panel in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard_panels():
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == DATASOURCE, panel["title"]
            assert target["expr"].strip() and target["refId"], panel["title"]


def test_no_two_panels_overlap_and_all_fit_the_grid():
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard()["panels"]:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        for x in range(grid["x"], grid["x"] + grid["w"]):
            for y in range(grid["y"], grid["y"] + grid["h"]):
                assert (x, y) not in taken, f"{panel['title']} overlaps {taken[(x, y)]}"
                taken[(x, y)] = panel["title"]


def test_the_dashboard_shows_what_operators_look_at():
    titles = " | ".join(panel["title"] for panel in dashboard_panels()).lower()
    for subject in ("mcs by region and health", "heartbeat rate", "join rate", "join latency", "assignments",
                    "mc assignment calls", "sweep duration", "marked unhealthy", "outbox", "http errors",
                    "grpc errors", "registrations by method and outcome", "process restarts"):
        assert subject in titles


def _check_as_recording_rules(promtool: str, exprs: dict[str, str], directory: Path):
    path = directory / "dashboard_queries.yml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard_query_{number}", "expr": expr} for number, expr in enumerate(exprs.values())
    ]}]}))
    return run_promtool(promtool, "check", "rules", path)


def test_every_dashboard_query_parses(promtool, tmp_path):
    exprs = dashboard_exprs()
    assert not any(re.search(r"\$\w", expr) for expr in exprs.values()), "a template variable left unreplaced"

    result = _check_as_recording_rules(promtool, exprs, tmp_path)

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout


def test_the_parse_check_fails_on_a_broken_query(promtool, tmp_path):
    result = _check_as_recording_rules(promtool, {"broken": "sum(rate(darktower_http_requests_total[5m])"}, tmp_path)

    assert result.returncode != 0
