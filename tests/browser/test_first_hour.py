"""The first hour of a newcomer, in a real headless Chromium against what `make run` starts.

`python -m tools.devenv run` itself (the command behind `make run`) runs in a subprocess with a throw-away data
folder (its own embedded PostgreSQL and Redis, initialised from nothing, as on a fresh clone) and free ports, and
with the environment a newcomer has: no SIMULATE, so the demo fleet is on. The test waits for the banner it
prints once every process is up, then: logs in to the admin with the credentials of that banner, sees live healthy
simulated MCs in the demo fleet's regions on the fleet dashboard and one of them beat again, runs the README's REST
walkthrough (its join answers 201, its eu-west-1 join 503), reads a controller's labels and times, and walks the
audit log's pages. Every wait polls for a condition, with a deadline.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from shutil import rmtree

import psycopg
import pytest

from tests.browser.test_browser import _screenshot, chromium, chromium_path, page  # noqa: F401 (fixtures)
from tests.docs.test_readme_walkthrough import README, run_walkthrough, walkthrough_steps
from tools import devenv

pytestmark = [pytest.mark.browser, pytest.mark.slow]

# From nothing: initdb, every migration, the demo data, then the servers, the Celery worker and the fleet's
# registrations, on a 2-core machine that may be running other work.
STARTUP_TIMEOUT_SECONDS = 300.0
DASHBOARD = "/admin/controllers/meetingcontroller/"
TIME_WITH_SECONDS = re.compile(r"\b\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}\b")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def poll(check: Callable[[], bool], *, what: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"{what}: not within {timeout:.0f} s")
        time.sleep(0.5)


@dataclass
class MakeRun:
    base_url: str
    home: Path  # the folder a newcomer's shell is in: `.data` is its data folder
    email: str
    password: str
    output: Path

    def sql(self, query: str) -> list[tuple[object, ...]]:
        with psycopg.connect(host=str(devenv.Postgres(self.home / ".data").dir), user="postgres",
                             dbname="postgres") as connection:
            return connection.execute(query).fetchall()


@pytest.fixture(scope="module")
def make_run() -> Iterator[MakeRun]:
    # A short path: the embedded PostgreSQL's socket lives in it, and sun_path allows 107 bytes.
    home = Path(tempfile.mkdtemp(prefix="dt-first-hour-", dir="/tmp"))
    http_port, grpc_port = free_port(), free_port()
    cleared = ("DATABASE_URL", "REDIS_URL", "SIMULATE", "DEV_SUPERUSER_PASSWORD", "LOG_", "ACCESS_LOG",
               "PROMETHEUS_MULTIPROC_DIR", "MC_ASSIGN_CALLS", "DJANGO_ALLOW_ASYNC_UNSAFE")
    env = {name: value for name, value in os.environ.items() if not name.startswith(cleared)}
    env |= {"DARKTOWER_DATA_DIR": str(home / ".data"), "HTTP_BIND": f"127.0.0.1:{http_port}",
            "GRPC_BIND": f"127.0.0.1:{grpc_port}", "SIMULATE_API_URL": f"http://127.0.0.1:{http_port}"}
    output = home / "make-run.log"
    with open(output, "wb") as sink:
        process = subprocess.Popen([sys.executable, "-m", "tools.devenv", "run"], cwd=devenv.ROOT, env=env,
                                   stdin=subprocess.DEVNULL, stdout=sink, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        started = time.monotonic()
        poll(lambda: devenv.READY_BANNER in output.read_text() or process.poll() is not None,
             what="make run's banner saying every process is up", timeout=STARTUP_TIMEOUT_SECONDS)
        text = output.read_text()
        assert process.poll() is None, f"make run exited with {process.returncode}:\n{text[-3000:]}"
        print(f"make run: every process up after {time.monotonic() - started:.1f} s")
        ready_banner = text.split(devenv.READY_BANNER, 1)[1]
        email = re.search(r"^  superuser (\S+)$", ready_banner, re.M)
        password = re.search(r"^  password  (\S+)$", ready_banner, re.M)
        assert email and password, ready_banner
        assert text.count(f"  password  {password[1]}") == 2, "the banner is printed twice"
        yield MakeRun(f"http://127.0.0.1:{http_port}", home, email[1], password[1], output)
    finally:
        process.send_signal(signal.SIGTERM)  # devenv stops its processes, then the embedded servers
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        rmtree(home, ignore_errors=True)


def reload_until(page, check: Callable[[], bool], *, what: str, timeout: float) -> None:  # noqa: F811
    def reloaded() -> bool:
        page.reload()
        return check()

    poll(reloaded, what=what, timeout=timeout)


def healthy_simulated(page) -> dict[str, str]:  # noqa: F811
    """Simulated controllers the dashboard shows healthy: id -> region (from the id, sim-mc-<region>-<n>)."""
    # One read of the whole list: the page replaces its rows on its own every few seconds.
    badges = page.eval_on_selector_all(
        "#result_list .dt-health", "els => els.map(el => [el.dataset.id || '', el.textContent.trim()])"
    )
    return {
        member: member.removeprefix("sim-mc-").rsplit("-", 1)[0]
        for member, health in badges
        if member.startswith("sim-mc-") and health == "healthy"
    }


def test_the_first_hour(make_run, page):  # noqa: F811
    # The banner's login is also kept in .data/, beside the password.
    assert (make_run.home / ".data/dev-superuser-email.txt").read_text().strip() == make_run.email
    assert (make_run.home / ".data/dev-superuser.txt").read_text().strip() == make_run.password

    # The admin login with the banner's credentials.
    page.goto(f"{make_run.base_url}/admin/login/")
    page.fill("#id_username", make_run.email)
    page.fill("#id_password", make_run.password)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")
    assert page.locator("#site-name").inner_text().strip() == "Dark Tower control plane"

    # The fleet dashboard: live healthy simulated MCs in every region of the demo fleet.
    page.goto(f"{make_run.base_url}{DASHBOARD}")
    page.wait_for_selector("#result_list")
    assert set(page.locator("#dt-fleet-summary .dt-region h2").all_inner_texts()) >= {
        "us-east-1", "ap-south-1", "eu-west-1"}
    reload_until(page, lambda: set(healthy_simulated(page).values()) == set(devenv.DEMO_FLEET_REGIONS),
                 what="healthy simulated MCs in every demo fleet region", timeout=60)
    _screenshot(page, "first_hour_dashboard")

    # Alive: a healthy MC's heartbeat age falls back when its next beat lands (fast beats every 10 s); the page
    # updates itself. Watched over every MC shown healthy: one in eight of the demo fleet goes silent, and stays
    # healthy on the page until the stale sweep marks it, its age only growing.
    members = sorted(healthy_simulated(page))
    page.wait_for_function(
        """(ids) => {
            window.__dtMaxAge = window.__dtMaxAge || {};
            return ids.some((id) => {
                const cell = document.querySelector(`#result_list .dt-age[data-id="${id}"]`);
                const age = cell ? parseInt(cell.textContent, 10) : NaN;
                if (Number.isNaN(age)) return false;
                window.__dtMaxAge[id] = Math.max(window.__dtMaxAge[id] || 0, age);
                return age < window.__dtMaxAge[id];
            });
        }""",
        arg=members, timeout=40_000, polling=500,
    )

    # The README's walkthrough as a newcomer pastes it, in the folder whose .data/ make run wrote. Its eu-west-1
    # join is a 503 once the stale sweep has marked that region's demo MCs (they never beat): wait for that.
    poll(lambda: not make_run.sql("SELECT 1 FROM meeting_controllers WHERE region = 'eu-west-1' "
                                  "AND health_status IN ('healthy', 'degraded')"),
         what="eu-west-1's demo MCs marked unhealthy", timeout=90)
    answers = run_walkthrough(walkthrough_steps(README.read_text()), base_url=make_run.base_url, cwd=make_run.home)
    assert len(answers) == 5
    joined = answers[2]
    assert joined["participant"]["role"] == "host"
    assert joined["controller_id"].startswith("sim-mc-us-east-1-")

    # The capacity bars count placeable members only, the whole fleet beside them: eu-west-1's demo MCs never
    # beat, so its bar has nothing placeable whatever they report; us-east-1's live MCs are placeable.
    page.goto(f"{make_run.base_url}{DASHBOARD}")
    bars = page.eval_on_selector_all(
        "#dt-fleet-summary .dt-region",
        """regions => Object.fromEntries(regions.map(r => {
            const bar = r.querySelector('.dt-util[data-capacity="meetings"]');
            return [r.dataset.region, bar && [+bar.dataset.placeable, +bar.dataset.total,
                                              bar.querySelector('.dt-total').textContent.trim()]];
        }))""",
    )
    eu_placeable, eu_total, eu_text = bars["eu-west-1"]
    assert eu_placeable == 0 and eu_total > 0 and eu_text == f"placeable of {eu_total} total", bars
    us_placeable, us_total, _ = bars["us-east-1"]
    assert 0 < us_placeable <= us_total, bars

    # A controller's page: labels as operators say them, one time format (24-hour, with seconds).
    page.goto(f"{make_run.base_url}/admin/controllers/meetingcontroller/{joined['controller_id']}/change/")
    page.wait_for_selector("#content-main")
    labels = page.locator("#content-main label, #content-main .readonly").all_inner_texts()
    text = page.locator("#content-main").inner_text()
    for label in ("gRPC endpoint", "WebTransport endpoint", "CPU usage (%)"):
        assert any(label in shown for shown in labels), (label, labels)
    assert "Grpc" not in text and "Webtransport" not in text and "Cpu" not in text
    assert TIME_WITH_SECONDS.search(text), text
    assert not re.search(r"\b(a\.m\.|p\.m\.|AM|PM)\b", text)
    _screenshot(page, "first_hour_controller")

    # The audit log: every page it links has rows; the walkthrough's meeting is there.
    page.goto(f"{make_run.base_url}/admin/audit/auditlog/")
    page.wait_for_selector("#result_list")
    assert page.locator("#result_list tbody tr").count() > 0
    assert page.locator("#result_list", has_text="meeting_created").count() == 1
    pages = page.locator(".paginator a").evaluate_all("links => links.map(a => a.href)")
    for url in pages:
        page.goto(url)
        assert page.locator("#result_list tbody tr").count() > 0, url
    assert TIME_WITH_SECONDS.search(page.locator("#result_list").inner_text())
    _screenshot(page, "first_hour_audit")
