"""PROMETHEUS_MULTIPROC_DIR: samples of several processes add up in one scrape; a dead database does not fail it.

prometheus-client picks its storage when first imported, so each side runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from darktower.devenv import ROOT

RECORD = textwrap.dedent("""
    import django
    django.setup()
    from darktower.metrics import GRPC_LATENCY, GRPC_REQUESTS, SWEEP_MARKED
    GRPC_REQUESTS.labels("/svc/Beat", "OK").inc(5)
    GRPC_LATENCY.labels("/svc/Beat").observe(0.002)
    SWEEP_MARKED.labels("meeting_controller").inc(2)
""")
SCRAPE = textwrap.dedent("""
    import django
    django.setup()
    from prometheus_client import generate_latest
    from darktower.metrics import scrape_registry
    print(generate_latest(scrape_registry()).decode())
""")


def run(code: str, env: dict[str, str]) -> str:
    completed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stdout


def test_samples_of_several_processes_add_up(tmp_path):
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        # Nobody listens there: the scrape must still answer, with the database gauge at 0.
        "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none", "DB_CONN_MAX_AGE": "0",
    }
    run(RECORD, env)
    run(RECORD, env)
    assert len(list(tmp_path.glob("*.db"))) >= 2

    lines = set(run(SCRAPE, env).splitlines())

    assert 'darktower_grpc_requests_total{code="OK",method="/svc/Beat"} 10.0' in lines
    assert 'darktower_grpc_request_duration_seconds_count{method="/svc/Beat"} 2.0' in lines
    assert 'darktower_sweep_marked_total{target_type="meeting_controller"} 4.0' in lines
    assert "darktower_metrics_database_up 0.0" in lines
    assert not any(line.startswith("darktower_fleet_members{") for line in lines)
