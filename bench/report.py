"""Render bench/RESULTS.md from bench/results/*.json (written by each bench)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path

from bench.common import RESULTS_DIR, ROOT, markdown_table

ORDER = ("heartbeat_ingestion", "join", "stale_sweep", "fleet_dashboard", "audit_retention", "fleet_restart")

HEADER = """# Benchmark results

Produced by `make bench` (`python -m bench.run_all`, which runs each `python -m bench.<name>` below and then
`python -m bench.report`). Every figure was measured on this machine in the run named under its table, next to
the limit it is compared with, measured in the same run. Raw figures, plans and machine details:
`bench/results/<name>.json`. Figures vary by 10-30 % from run to run on this shared 2-core machine, more
while other work runs on it. Benches 1, 2 and 4 record the 1-minute load average around their run; it counts
the bench's own processes too, so a figure above 2 does not by itself mean that other work was running.
"""


def _section(payload: dict) -> str:
    machine = payload.get("machine", {})
    lines = [
        f"## {payload['title']}",
        "",
        f"Command: `{payload['command']}`  ",
        f"Measured {payload.get('measured_at')} on {machine.get('cpus')} CPUs, Python {machine.get('python')}, "
        f"PostgreSQL {machine.get('postgres')}" + (" (--quick: smoke scale, figures mean nothing)" if payload.get(
            "quick") else ""),
        "",
        markdown_table(payload["headers"], payload["rows"]),
        "",
    ]
    lines += [f"- {note}" for note in payload.get("notes", [])]
    for key, text in payload.get("data", {}).get("plans", {}).items():
        lines += ["", f"<details><summary>{key}</summary>", "", "```", text.rstrip(), "```", "", "</details>"]
    return "\n".join(lines).rstrip() + "\n"


def render(results_dir: Path, target: Path, *, failed: Sequence[str] = ()) -> Path:
    payloads = {path.stem: json.loads(path.read_text()) for path in sorted(results_dir.glob("*.json"))}
    names = [name for name in ORDER if name in payloads] + sorted(set(payloads) - set(ORDER))
    parts = [HEADER]
    missing = [name for name in ORDER if name not in payloads]
    if missing:
        parts.append(f"Not measured yet (no bench script or no result): {', '.join(missing)}.\n")
    if failed:
        parts.append(f"**Failed in the last run:** {', '.join(failed)} (their sections below are older, if any).\n")
    parts += [_section(payloads[name]) for name in names]
    target.write_text("\n".join(parts))
    return target


if __name__ == "__main__":
    print(render(RESULTS_DIR, ROOT / "bench" / "RESULTS.md", failed=sys.argv[1:]))
