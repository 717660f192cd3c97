"""The development supervisor (tools/devenv.py): its pure parts, and its process handling for real."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest
from django.conf import settings

from tools import devenv

ROOT = devenv.ROOT


@pytest.fixture
def session_urls() -> dict[str, str]:
    """DATABASE_URL / REDIS_URL for what this test session already uses, so a nested devenv starts nothing."""
    pg_url = settings.DATABASE_URL or f"postgresql://postgres@{quote(str(settings.EMBEDDED_PG_DIR), safe='')}/postgres"
    return {"DATABASE_URL": pg_url, "REDIS_URL": settings.REDIS_URL}


def run_devenv(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "tools.devenv", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_redis_config_listens_on_the_data_dir_socket_only():
    config = devenv.redis_config(Path("/srv/dark tower/data")).splitlines()

    assert "port 0" in config
    assert 'unixsocket "/srv/dark tower/data/redis.sock"' in config
    assert "unixsocketperm 700" in config
    assert 'dir "/srv/dark tower/data"' in config
    assert "dbfilename redis.rdb" in config
    assert [line for line in config if line.startswith("save ")] == ["save 900 1", "save 300 10", "save 60 10000"]


@pytest.mark.slow
def test_generated_config_runs_the_bundled_redis_and_saves_on_stop(tmp_path):
    data = tmp_path / "with space"
    data.mkdir()
    server = devenv.Redis(data)
    server.start()
    try:
        devenv.wait_until(server.answers, what="redis")
        server.client().set("k", "v")
    finally:
        server.stop()

    assert not server.answers()
    assert server.process is not None and server.process.returncode == 0
    assert (data / "redis.rdb").exists()
    assert not (data / "redis.sock").exists()


def test_data_dir_matches_the_settings_rule(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in {"DATABASE_URL", "REDIS_URL"}}
    env |= {"DARKTOWER_DATA_DIR": str(tmp_path), "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1"}
    code = "from django.conf import settings as s; print(s.DATA_DIR); print(s.EMBEDDED_PG_DIR); print(s.REDIS_URL)"
    printed = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True
    ).stdout.split()

    data = devenv.data_dir(env)
    assert printed == [str(data), str(devenv.Postgres(data).dir), f"unix://{devenv.Redis(data).data / 'redis.sock'}"]
    assert devenv.data_dir({}) == ROOT / ".data"


def test_dev_env_defaults_debug_on_but_keeps_an_explicit_value():
    assert devenv.dev_env({"PATH": "/bin"}) == {"PATH": "/bin", "DEBUG": "1", "PYTHONUNBUFFERED": "1"}
    assert devenv.dev_env({"DEBUG": "0"})["DEBUG"] == "0"


def test_process_table_has_only_http_until_other_servers_exist(tmp_path):
    table = devenv.process_table(root=tmp_path, env={"SIMULATE": "5"}, python="py", grpc_bind="127.0.0.1:50051")

    assert [spec.name for spec in table] == ["http"]
    http = table[0]
    assert http.argv[:3] == ("py", "-m", "gunicorn")
    assert "darktower.wsgi:application" in http.argv
    assert http.argv[http.argv.index("--bind") + 1] == "127.0.0.1:8000" == http.ready_addr
    assert http.argv[http.argv.index("--worker-class") + 1] == "gthread"
    assert "--access-logfile" not in http.argv


def test_process_table_grows_with_the_commands_that_exist(tmp_path):
    commands = tmp_path / "controllers/management/commands"
    commands.mkdir(parents=True)
    (commands / "grpcserver.py").touch()
    (commands / "simulate_fleet.py").touch()
    (tmp_path / "darktower").mkdir()
    (tmp_path / "darktower/celery.py").touch()
    env = {"HTTP_BIND": "0.0.0.0:9000"}

    quiet = {**env, "SIMULATE": "0"}
    without_tasks = devenv.process_table(root=tmp_path, env=quiet, python="py", grpc_bind="127.0.0.1:6000")
    (tmp_path / "controllers/tasks.py").touch()
    with_tasks = devenv.process_table(root=tmp_path, env=quiet, python="py", grpc_bind="127.0.0.1:6000")
    simulating = devenv.process_table(root=tmp_path, env={**env, "SIMULATE": "40"}, python="py", grpc_bind="x:1")

    assert [spec.name for spec in without_tasks] == ["http", "grpc"]
    assert without_tasks[0].ready_addr == "0.0.0.0:9000"
    assert without_tasks[1].argv == ("py", "manage.py", "grpcserver")
    assert without_tasks[1].ready_addr == "127.0.0.1:6000"
    assert [spec.name for spec in with_tasks] == ["http", "grpc", "celery"]
    assert with_tasks[2].argv[:6] == ("py", "-m", "celery", "-A", "darktower", "worker")
    assert "-B" in with_tasks[2].argv
    assert simulating[-1].argv[:7] == ("py", "manage.py", "simulate_fleet", "--controllers", "40", "--handlers", "8")
    assert {"--streams", "--serve-assignments"} <= set(simulating[-1].argv)
    assert option(simulating[-1], "--target") == "x:1"
    assert option(simulating[-1], "--api") == "http://0.0.0.0:9000"
    assert simulating[-1].ready_addr is None
    assert simulating[-1].ready_line is not None
    assert with_tasks[2].ready_line is not None


def option(spec: devenv.ProcessSpec, name: str) -> str:
    return spec.argv[spec.argv.index(name) + 1]


def test_a_demo_fleet_is_simulated_unless_simulate_is_0(tmp_path):
    commands = tmp_path / "controllers/management/commands"
    commands.mkdir(parents=True)
    (commands / "simulate_fleet.py").touch()

    default = devenv.process_table(root=tmp_path, env={}, python="py", grpc_bind="127.0.0.1:6000")
    off = devenv.process_table(root=tmp_path, env={"SIMULATE": "0"}, python="py", grpc_bind="127.0.0.1:6000")

    assert [spec.name for spec in off] == ["http"]
    simulate = default[-1]
    assert simulate.name == "simulate"
    assert int(option(simulate, "--controllers")) == devenv.DEMO_FLEET_SIZE >= 2 * len(devenv.DEMO_FLEET_REGIONS)
    assert int(option(simulate, "--handlers")) >= len(devenv.DEMO_FLEET_REGIONS)
    assert option(simulate, "--regions") == ",".join(devenv.DEMO_FLEET_REGIONS)
    # Some members go silent and some drain: at least one of each among the demo's controllers.
    assert round(devenv.DEMO_FLEET_SIZE * float(option(simulate, "--stale-share"))) >= 1
    assert round(devenv.DEMO_FLEET_SIZE * float(option(simulate, "--draining-share"))) >= 1
    assert option(simulate, "--api") == "http://127.0.0.1:8000"


def test_simulate_must_be_a_count(tmp_path):
    commands = tmp_path / "controllers/management/commands"
    commands.mkdir(parents=True)
    (commands / "simulate_fleet.py").touch()

    with pytest.raises(devenv.DevenvError, match="SIMULATE"):
        devenv.process_table(root=tmp_path, env={"SIMULATE": "yes"}, python="py", grpc_bind="127.0.0.1:6000")


def test_the_demo_fleet_beats_in_demo_regions_and_leaves_one_to_its_silent_demo_rows():
    """The simulated MCs keep demo regions placeable; the demo region they leave out has only the demo rows,
    which never beat: the README's 503 example (a known region with nothing placeable) happens there."""
    from meetings.demo_data import CONTROLLERS

    demo_regions = {controller.region for controller in CONTROLLERS}
    assert set(devenv.DEMO_FLEET_REGIONS) < demo_regions
    assert "eu-west-1" in demo_regions - set(devenv.DEMO_FLEET_REGIONS)
    assert '"region": "eu-west-1"' in (ROOT / "README.md").read_text()


def test_a_child_is_ready_once_its_ready_line_is_printed():
    spec = devenv.ProcessSpec("celery", ("true",), ready_line=r"celery@\S+ ready\.")
    child = devenv.Child(spec, proc=None)  # type: ignore[arg-type]

    assert not child.ready.is_set()
    child.saw("celery  | 2026 INFO celery.apps.worker Connected")
    assert not child.ready.is_set()
    child.saw("2026-12-07 20:06:11,752 INFO celery.apps.worker celery@vm ready.")
    assert child.ready.is_set()
    assert devenv.Child(devenv.ProcessSpec("grpc", ("true",)), proc=None).ready.is_set()  # type: ignore[arg-type]


def test_watch_announces_once_when_every_child_is_up(tmp_path):
    announced = tmp_path / "announced"
    # Each child stays up until the announcement has been made, then exits: watch returns.
    wait = f"import os, time\nwhile not os.path.exists({str(announced)!r}): time.sleep(0.05)"
    specs = [
        devenv.ProcessSpec("celery", (sys.executable, "-c", f"print('celery@host ready.', flush=True)\n{wait}"),
                           ready_line=devenv.CELERY_READY_LINE),
        devenv.ProcessSpec("plain", (sys.executable, "-c", wait)),
    ]
    calls: list[bool] = []

    def on_ready() -> None:
        calls.append(all(child.ready.is_set() for child in children))
        announced.touch()

    children: list[devenv.Child] = []
    try:
        for spec in specs:
            devenv.start_child(spec, os.environ, children)
        code = devenv.watch(children, on_ready=on_ready)
    finally:
        devenv.stop_children(children)

    assert code == 1  # a child exited
    assert calls == [True]


def test_the_banner_names_the_admin_login_and_says_when_everything_is_up():
    table = [devenv.ProcessSpec("http", ("x",), "127.0.0.1:8000"), devenv.ProcessSpec("grpc", ("x",), "127.0.0.1:1")]
    credentials = "superuser admin@darktower.local\npassword  pw"

    first = devenv.banner(table, credentials, Path("/d"))
    ready = devenv.banner(table, credentials, Path("/d"), ready=True)

    for text in (first, ready):
        assert "http://127.0.0.1:8000/admin/" in text
        assert "superuser admin@darktower.local" in text and "password  pw" in text
    assert "starting" in first.lower()
    assert devenv.READY_BANNER in ready and devenv.READY_BANNER not in first


def test_exec_exits_with_the_commands_exit_code(session_urls):
    result = run_devenv(
        "exec", "--", sys.executable, "-c", "import sys; sys.exit(3)", env={**os.environ, **session_urls}
    )

    assert result.returncode == 3
    assert "starting embedded" not in result.stdout


def test_exec_reports_a_signal_death_like_a_shell(session_urls):
    kill_self = "import os, signal; os.kill(os.getpid(), signal.SIGTERM)"
    result = run_devenv("exec", "--", sys.executable, "-c", kill_self, env={**os.environ, **session_urls})

    assert result.returncode == 128 + 15


def test_exec_without_a_command_prints_usage():
    result = run_devenv("exec", "--", env=dict(os.environ))

    assert result.returncode == 2
    assert "usage:" in result.stderr


@pytest.mark.slow
def test_embedded_redis_stops_with_its_last_devenv_user(tmp_path, session_urls):
    env = {**os.environ, "DATABASE_URL": session_urls["DATABASE_URL"], "DARKTOWER_DATA_DIR": str(tmp_path)}
    env.pop("REDIS_URL", None)
    wait_for_stdin = "import sys; print('holding', flush=True); sys.stdin.read()"
    holder = subprocess.Popen(
        [sys.executable, "-m", "tools.devenv", "exec", "--", sys.executable, "-c", wait_for_stdin],
        cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdin is not None and holder.stdout is not None
    try:
        assert "starting embedded redis" in holder.stdout.readline()
        assert holder.stdout.readline() == "holding\n"
        with devenv.EmbeddedServices(env) as services:
            assert [s.name for s in services.wanted] == ["redis"]
        still_up = devenv.Redis(tmp_path).answers()
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)

    assert still_up
    assert holder.returncode == 0
    assert not devenv.Redis(tmp_path).answers()
    assert not (tmp_path / "redis.pid").exists()


@pytest.mark.slow
def test_a_server_no_devenv_started_is_reused_and_left_running(tmp_path):
    outside = devenv.Redis(tmp_path)
    outside.start()
    try:
        devenv.wait_until(outside.answers, what="redis")
        with devenv.EmbeddedServices({"DATABASE_URL": "unused", "DARKTOWER_DATA_DIR": str(tmp_path)}):
            pass
        assert outside.answers()
    finally:
        outside.stop()


@pytest.mark.slow
def test_clean_data_refuses_while_a_server_runs_and_then_removes_the_folder(tmp_path):
    data = tmp_path / "data"
    data.mkdir()
    server = devenv.Redis(data)
    server.start()
    try:
        devenv.wait_until(server.answers, what="redis")
        refused = run_devenv("clean-data", env={**os.environ, "DARKTOWER_DATA_DIR": str(data)})
    finally:
        server.stop()
    removed = run_devenv("clean-data", env={**os.environ, "DARKTOWER_DATA_DIR": str(data)})

    assert refused.returncode == 1
    assert "in use (redis)" in refused.stderr
    assert removed.returncode == 0
    assert not data.exists()
