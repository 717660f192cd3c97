"""Every benchmark runs at --quick scale and writes its JSON, and RESULTS.md renders from it: the benches cannot
rot unnoticed. No figure is checked (timing targets live in bench/, not in tests); the shape and the
correctness checks each bench makes on its own data are."""

from __future__ import annotations

import json
import subprocess
import sys

import psycopg
import pytest

from bench.common import Server
from bench.run_all import BENCHES
from tools.devenv import ROOT

# One xdist worker runs these, one at a time (make test's --dist loadgroup): the module-scoped run shares its
# scratch database names; with the fault and load tests, they are the suite's heavy processes.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("processes")]
PREFIX = "bench_smoke"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    results_dir = tmp_path_factory.mktemp("bench-results")
    report = results_dir / "RESULTS.md"
    completed = subprocess.run(
        [sys.executable, "-m", "bench.run_all", "--quick", "--results-dir", str(results_dir), "--db-prefix", PREFIX,
         "--report", str(report)],
        cwd=ROOT, capture_output=True, text=True, timeout=600, check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    return results_dir, report, completed.stdout


def load(results_dir, name):
    payload = json.loads((results_dir / f"{name}.json").read_text())
    assert payload["quick"] is True
    assert payload["command"] == f"python -m bench.{name} --quick --results-dir {results_dir} --db-prefix {PREFIX}"
    assert all(len(row) == len(payload["headers"]) for row in payload["rows"])
    return payload


def test_every_bench_writes_its_json_and_prints_its_table(results):
    results_dir, _, stdout = results

    for name in BENCHES:
        payload = load(results_dir, name)
        assert payload["rows"]
        assert f"## {payload['title']}" in stdout


def test_stale_sweep_marks_exactly_the_stale_and_explains_with_an_index(results):
    payload = load(results[0], "stale_sweep")

    for row in payload["rows"]:
        stale, marked, indexes = row[2], row[3], row[-1]
        assert marked == stale
        assert "idx_controllers_heartbeat" in indexes
    assert any("Index" in plan for plan in payload["data"]["all_plans"].values())


def test_audit_retention_deletes_then_drops_the_partition(results):
    payload = load(results[0], "audit_retention")

    operations = [row[0] for row in payload["rows"]]
    assert operations[1] == "DELETE of the month's rows"
    assert operations[-1].startswith("drop partition")
    assert payload["rows"][-1][-1] == 0  # the partition's files are gone
    assert payload["data"]["partition"].startswith("audit_logs_y")


def test_heartbeat_ingestion_compares_with_the_noop_server(results):
    payload = load(results[0], "heartbeat_ingestion")

    runs = payload["data"]["runs"]
    assert {"noop closed", "noop open", "aio noop closed", "aio noop streams closed", "aio noop streams open"} <= set(
        runs)
    servers = [label for label in runs if label.startswith("grpcserver")]
    assert len([label for label in servers if label.endswith("closed")]) >= 2
    assert any(label.endswith("open") for label in servers)
    assert any(runs[label]["processes"] == 2 for label in servers)
    # The fleet over StreamHeartbeats (the C++ client): every beat of every stream answered.
    streamed = [label for label in servers if label.endswith("streams open")]
    assert streamed
    for label in [*streamed, "aio noop streams open"]:
        assert set(runs[label]["codes"]) == {"OK"}
        assert runs[label]["streams"] == payload["data"]["controllers"]
    for label, run in runs.items():
        assert run["codes"] == {"OK": run["calls"]}, label
        assert run["ok"] > 0
    for label in servers:
        if label.endswith("closed streams"):
            continue  # its --in-flight streams beat for their MCs only
        assert runs[label]["rows_written"] == payload["data"]["controllers"], label
    assert payload["data"]["psycopg_single_row_updates_per_second"] > 0


def test_join_compares_with_the_trivial_endpoint_and_finds_no_double_assignment(results):
    payload = load(results[0], "join")

    runs = payload["data"]["runs"]
    assert [row[0] for row in payload["rows"]] == [
        "GET /health (trivial DRF view)", "POST .../join (mixed)", "POST .../join, reused assignment",
        "POST .../join, reused, Idempotency-Key", "POST .../join, first join",
        "POST .../join, first join, Idempotency-Key", "POST .../join (mixed), open loop at 20/s",
        "POST .../join (mixed), MC asked on first joins",
    ]
    assert runs["health"]["codes"] == {"200": runs["health"]["calls"]}
    for name in ("join", "reused", "reused_key", "first", "first_key"):
        assert set(runs[name]["codes"]) <= {"200", "201"} and runs[name]["ok"] > 0, name
        cpu = runs[name]["cpu_ms_per_request"]
        # PostgreSQL works on every join: its CPU is counted beside gunicorn's.
        assert cpu["gunicorn"] > 0 and cpu["postgres"] > 0, (name, cpu)
        assert cpu["machine"] == pytest.approx(cpu["gunicorn"] + cpu["postgres"] + cpu["redis"])
    # The open loop offered its rate on the clock and every join it sent was answered.
    opened = runs["open"]
    assert opened["rate_offered"] == 20 and set(opened["codes"]) <= {"200", "201"} and opened["ok"] > 0
    assert 0 < opened["connections_opened"] <= opened["connections"]
    assert opened["p50_ms"] <= opened["p99_ms"] <= opened["p999_ms"]
    # Every join of the first-join runs was the first of its meeting.
    assert runs["first"]["pairs_total"] == runs["first"]["successes_total"] > 0
    assert set(runs["join_mc_calls"]["codes"]) <= {"200", "201"} and runs["join_mc_calls"]["ok"] > 0
    assert payload["data"]["correct"] is True
    assert set(payload["data"]["problems"].values()) == {0}
    # With the MC asked: every assignment told once, and every check of the first run holds too.
    assert set(payload["data"]["mc_calls_problems"].values()) == {0}
    assert payload["data"]["mc_calls_told"] == payload["data"]["mc_calls_checks"]["active assignments"] > 0
    assert payload["data"]["checks"]["active assignments"] >= runs["join"]["pairs_total"] > 0
    counts = payload["data"]["statements_per_join"]
    assert set(counts) == {"first", "reused", "first, Idempotency-Key", "reused, Idempotency-Key"}
    assert counts["first"]["statements"] >= counts["reused"]["statements"] > 0
    for kind, count in counts.items():
        assert count["round_trips"] >= count["statements"], (kind, count)
        # The join service's part is within the whole request's.
        assert 0 < count["service_statements"] <= count["statements"], (kind, count)
        assert 0 < count["service_round_trips"] <= count["round_trips"], (kind, count)
    for kind in ("first, Idempotency-Key", "reused, Idempotency-Key"):
        # The key's transaction holds the join: round trips add at least its BEGIN and COMMIT to the statements. A
        # join without one is a statement of its own (the meeting_join database function), with neither.
        assert counts[kind]["round_trips"] >= counts[kind]["statements"] + 2, (kind, counts[kind])
    assert counts["first, Idempotency-Key"]["round_trips"] > counts["first"]["round_trips"]


def test_fleet_dashboard_query_count_does_not_grow_with_the_fleet(results):
    payload = load(results[0], "fleet_dashboard")

    by_page: dict[str, set[str]] = {}
    for size, page, shown, queries, *_ in payload["rows"]:
        by_page.setdefault(page, set()).add(queries)
        if page != "changelist, region + health filter, search":
            assert shown == min(100, size), (size, page)
    assert len(by_page) == 4
    assert all(len(counts) == 1 for counts in by_page.values()), by_page


def test_fleet_restart_leaves_every_row_and_refuses_only_with_resource_exhausted(results):
    payload = load(results[0], "fleet_restart")

    data = payload["data"]
    storm = data["storm"]
    assert storm["finished"] == data["controllers"] > 0
    assert data["rows"] == data["rows_expected"] and data["rows_ok"] is True
    assert data["unexpected_codes"] == {"register": {}, "beat": {}}
    assert storm["register"]["codes"]["OK"] == storm["beat"]["codes"]["OK"] == data["controllers"]
    # --quick's per-credential limit is below its fleet's registrations in a window: those refused (if the server
    # took them in faster than the limit) waited out their retry-after, every one.
    refused = storm["register"]["codes"].get("RESOURCE_EXHAUSTED", 0)
    assert refused == sum(storm["register"]["retry_after_waits"].values())
    # The running fleet: never refused, during the storm either; how late its answers come is a figure (p99), and on
    # a loaded machine at smoke scale some may miss their deadline or their slot in the schedule.
    assert set(data["steady_alone"]["codes"]) <= {"OK", "DEADLINE_EXCEEDED", "NOT_SENT"}
    assert set(data["steady_during"]["codes"]) <= {"OK", "DEADLINE_EXCEEDED", "NOT_SENT"}
    assert data["steady_alone"]["ok"] > 0 and data["steady_during"]["ok"] > 0


def test_results_md_renders_every_section(results):
    results_dir, report, _ = results

    text = report.read_text()
    assert BENCHES == (
        "heartbeat_ingestion", "join", "stale_sweep", "fleet_dashboard", "audit_retention", "fleet_restart",
    )
    for name in BENCHES:
        assert json.loads((results_dir / f"{name}.json").read_text())["title"] in text
    assert "Command: `python -m bench.stale_sweep --quick" in text
    assert "Not measured yet" not in text


def test_scratch_databases_are_dropped(results):
    server = Server.from_settings()
    with psycopg.connect(autocommit=True, **server.connect_kwargs("postgres")) as conn:
        names = [row[0] for row in conn.execute("SELECT datname FROM pg_database").fetchall()]

    assert [name for name in names if name.startswith(f"{PREFIX}_")] == []
