"""PROMETHEUS_MULTIPROC_DIR: samples of several processes add up in one scrape; a dead database does not fail it;
`make run` gives its processes a fresh directory, and gunicorn forgets the workers that exit.

prometheus-client picks its storage when first imported, so each side runs in a fresh interpreter.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
import urllib.request
from types import SimpleNamespace

import pytest

from darktower.gunicorn_conf import child_exit
from tests.faults.processes import free_port
from tools.devenv import ROOT, fresh_metrics_dir, process_table

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


def test_make_run_empties_the_metrics_dir_under_the_data_dir(tmp_path):
    left_over = tmp_path / "prometheus" / "counter_4242.db"
    left_over.parent.mkdir()
    left_over.write_bytes(b"old samples")

    path = fresh_metrics_dir(tmp_path)

    assert path == tmp_path / "prometheus"
    assert path.is_dir() and list(path.iterdir()) == []


def test_make_run_starts_gunicorn_with_the_shared_config(tmp_path):
    http = process_table(root=tmp_path, env={}, python="py", grpc_bind="127.0.0.1:1")[0]

    assert http.argv[http.argv.index("-c") + 1] == "python:darktower.gunicorn_conf"


def test_child_exit_drops_the_dead_workers_live_gauge_files(tmp_path, settings):
    settings.PROMETHEUS_MULTIPROC_DIR = str(tmp_path)
    for name in ("gauge_livesum_111.db", "gauge_liveall_111.db", "gauge_livesum_222.db", "counter_111.db"):
        (tmp_path / name).write_bytes(b"")

    child_exit(server=None, worker=SimpleNamespace(pid=111))

    assert sorted(path.name for path in tmp_path.iterdir()) == ["counter_111.db", "gauge_livesum_222.db"]


def _get(url: str) -> tuple[int, str]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return response.status, response.read().decode()


@pytest.mark.slow
def test_gunicorn_workers_add_up_in_one_scrape(tmp_path):
    """gunicorn as `make run` starts it (two workers, the shared config): /metrics counts every request, whichever
    worker served it."""
    port = free_port()
    env = {
        **os.environ, "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1", "LOG_LEVEL": "WARNING",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path), "DATABASE_URL": "postgresql://nobody@127.0.0.1:9/none",
    }
    argv = process_table(root=ROOT, env={"HTTP_BIND": f"127.0.0.1:{port}"}, python=sys.executable, grpc_bind="")[0].argv
    server = subprocess.Popen(argv, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 30
        # Polled on /metrics, not /health: a poll that times out on a loaded machine may still have been served
        # and counted, and only /health's count is asserted.
        while True:
            try:
                _get(f"http://127.0.0.1:{port}/metrics")
                break
            except OSError:
                assert server.poll() is None and time.monotonic() < deadline, "gunicorn did not start"
                time.sleep(0.1)
        for _ in range(20):
            assert _get(f"http://127.0.0.1:{port}/health")[0] == 200

        status, text = _get(f"http://127.0.0.1:{port}/metrics")
    finally:
        server.terminate()
        server.wait(timeout=30)

    assert status == 200
    assert 'darktower_http_requests_total{method="GET",route="health",status="200"} 20.0' in text.splitlines()
    assert list(tmp_path.glob("counter_*.db"))  # the workers kept their samples in the shared directory
