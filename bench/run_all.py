"""`make bench`: every benchmark in turn, each in its own process, then bench/RESULTS.md from their JSON.

A bench that fails does not stop the others; the run exits non-zero and RESULTS.md says which one failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

from bench.common import PYTHON, RESULTS_DIR, ROOT
from bench.report import render

# Numbering as in bench/RESULTS.md: 1 heartbeat ingestion, 2 join, 3 stale sweep, 4 fleet dashboard, 5 audit retention,
# 6 fleet restart.
BENCHES = ("heartbeat_ingestion", "join", "stale_sweep", "fleet_dashboard", "audit_retention", "fleet_restart")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.run_all", description=__doc__)
    parser.add_argument("--only", action="append", choices=BENCHES, help="run just this bench (repeatable)")
    parser.add_argument("--quick", action="store_true", help="tiny scale (smoke); RESULTS.md is not rewritten")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where the JSON results go")
    parser.add_argument("--db-prefix", default="bench", help="scratch database name prefix")
    parser.add_argument("--report", type=Path, default=ROOT / "bench" / "RESULTS.md", help="the file to render")
    args = parser.parse_args(argv)
    failed = []
    for name in args.only or BENCHES:
        command = [PYTHON, "-m", f"bench.{name}", *(["--quick"] if args.quick else [])]
        # Only when not the defaults: the command each bench records for RESULTS.md stays the plain one.
        if args.results_dir != RESULTS_DIR:
            command += ["--results-dir", str(args.results_dir)]
        if args.db_prefix != "bench":
            command += ["--db-prefix", args.db_prefix]
        print(f"\n=== bench {name}: {' '.join(command[1:])}", flush=True)
        started = time.perf_counter()
        completed = subprocess.run(command, cwd=ROOT, check=False)
        print(f"=== bench {name}: exit {completed.returncode} in {time.perf_counter() - started:.0f} s", flush=True)
        if completed.returncode != 0:
            failed.append(name)
    if not args.quick or args.report != ROOT / "bench" / "RESULTS.md":
        path = render(args.results_dir, args.report, failed=failed)
        print(f"\nwrote {path}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
