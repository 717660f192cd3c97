"""The operators' admin in a real headless Chromium (Playwright) against pytest-django's live server: log in,
the dashboard shows the demo fleet by region, filter by health, drain through the action's confirmation page,
watch a heartbeat (recorded as the gRPC servicer records it) arrive without a reload, and find no way to edit an
audit entry.

Chromium is Debian's /usr/bin/chromium; a session fixture installs it with apt-get when it is missing and fails
(never skips) when that is impossible. Screenshots go to tests/artifacts/.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from controllers.heartbeats import RECORDERS, controller_heartbeats
from controllers.models import HealthStatus
from controllers.services.beats import Beat
from meetings.demo_data import demo_data_load
from tests.beats import recorder_reset
from tests.fixtures.admin import PASSWORD

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
DASHBOARD = "/admin/controllers/meetingcontroller/"
# The page polls every 5 s; allow two polls and some slack on a busy 2-core machine.
LIVE_UPDATE_TIMEOUT_MS = 15_000


@pytest.fixture(scope="session")
def chromium_path() -> Path:
    if not CHROMIUM.exists():
        apt = shutil.which("apt-get")
        if apt is None:
            pytest.fail(f"{CHROMIUM} is missing and apt-get is not available: install Debian's chromium package.")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for command in ([apt, "update"], [apt, "install", "-y", "chromium"]):
            result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
            if result.returncode != 0:
                pytest.fail(
                    f"{CHROMIUM} is missing and `{' '.join(command)}` failed (exit {result.returncode}); the "
                    f"browser tests need Debian's chromium package.\n{result.stderr[-2000:]}"
                )
        if not CHROMIUM.exists():
            pytest.fail(f"apt-get installed chromium but {CHROMIUM} does not exist.")
    return CHROMIUM


@pytest.fixture(scope="module")
def chromium(chromium_path):
    # Playwright's sync API runs an event loop in this thread while it is open; the test's own ORM calls are
    # still synchronous. Module scope: the loop and the async-unsafe allowance end with this module, so later
    # tests (asyncio.run in the simulator's) see neither.
    from playwright.sync_api import sync_playwright

    previous = os.environ.get("DJANGO_ALLOW_ASYNC_UNSAFE")
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    try:
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(
                executable_path=str(chromium_path), headless=True, args=CHROMIUM_ARGS
            )
            yield browser
            browser.close()
    finally:
        if previous is None:
            os.environ.pop("DJANGO_ALLOW_ASYNC_UNSAFE", None)
        else:
            os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = previous


@pytest.fixture
def page(chromium):
    context = chromium.new_context(viewport={"width": 1600, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def _screenshot(page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def _login(page, live_server, user) -> None:
    page.goto(f"{live_server.url}/admin/login/")
    page.fill("#id_username", user.email)
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_selector("#site-name")


def _health_of(page, controller_id: str) -> str:
    return page.locator(f'#result_list .dt-health[data-id="{controller_id}"]').inner_text()


@pytest.fixture
def heartbeat_recorders():
    # The recorders are process-wide: start from an empty cache (ids of other tests' databases) and stop the
    # flush thread they start, so that no connection of it outlives this test's database.
    for recorder in RECORDERS:
        recorder_reset(recorder)
    yield
    for recorder in RECORDERS:
        recorder.stop()
        recorder_reset(recorder)


def test_dashboard_filter_drain_and_live_heartbeat(page, live_server, operator_user, heartbeat_recorders):
    demo_data_load()
    _login(page, live_server, operator_user)

    # The index links the dashboard prominently.
    page.click("#dt-dashboard-link a.button")
    page.wait_for_selector("#result_list")
    regions = page.locator("#dt-fleet-summary .dt-region h2").all_inner_texts()
    assert regions == ["ap-south-1", "eu-west-1", "us-east-1"]
    assert page.locator('#result_list .dt-health[data-id="mc-eu-west-1-demo-03"]').count() == 1
    _screenshot(page, "dashboard")

    # Filter by health.
    page.locator("#changelist-filter a", has_text="unhealthy").first.click()
    page.wait_for_url("**health_status__exact=unhealthy**")
    badges = page.locator("#result_list .dt-health").all_inner_texts()
    assert badges and set(badges) == {"unhealthy"}
    _screenshot(page, "controller_list_unhealthy")

    # Drain through the action and its confirmation page.
    page.goto(f"{live_server.url}{DASHBOARD}")
    assert _health_of(page, "mc-us-east-1-demo-01") == "healthy"
    page.check('#result_list input.action-select[value="mc-us-east-1-demo-01"]')
    page.select_option("select[name=action]", "drain_action")
    page.click("button[name=index], .actions button[type=submit]")
    page.wait_for_selector("text=Drain controllers")
    assert "mc-us-east-1-demo-01" in page.locator(".dt-confirm-objects").inner_text()
    page.click("input[type=submit][value^='Yes']")
    page.wait_for_selector("#result_list")
    assert _health_of(page, "mc-us-east-1-demo-01") == "draining"
    assert "draining until" in page.locator(".messagelist").inner_text()
    _screenshot(page, "controller_drained")

    # A heartbeat arrives: the age drops and the stale highlight goes, without a reload.
    age = page.locator('#result_list .dt-age[data-id="mc-eu-west-1-demo-03"]')
    assert int(age.inner_text()) >= 290 and "dt-stale" in (age.get_attribute("class") or "")
    page.evaluate("window.__noReload = 'still here'")
    # What the gRPC servicer's FastHeartbeat does with a validated request, then the flush it schedules.
    controller_heartbeats.record(
        Beat("mc-eu-west-1-demo-03", HealthStatus.HEALTHY, {"current_meetings": 70, "current_participants": 600})
    )
    controller_heartbeats.flush()
    page.wait_for_function(
        """() => {
            const id = '[data-id="mc-eu-west-1-demo-03"]';
            const el = document.querySelector('#result_list .dt-age' + id);
            const bar = document.querySelector('#result_list .dt-meetings' + id + ' .dt-bar-text');
            return el && parseInt(el.textContent, 10) < 30 && !el.classList.contains('dt-stale')
                && bar && bar.textContent.startsWith('70 /');
        }""",
        timeout=LIVE_UPDATE_TIMEOUT_MS,
    )
    assert page.evaluate("window.__noReload") == "still here"
    _screenshot(page, "dashboard_after_heartbeat")


def test_viewer_sees_dashboard_without_actions(page, live_server, viewer_user):
    demo_data_load()
    _login(page, live_server, viewer_user)

    page.goto(f"{live_server.url}{DASHBOARD}")

    page.wait_for_selector("#result_list")
    assert page.locator("#dt-fleet-summary .dt-region").count() == 3
    options = page.locator("select[name=action] option").all_inner_texts() if page.locator(
        "select[name=action]").count() else []
    assert not [option for option in options if "Drain" in option]


def test_audit_log_entry_cannot_be_edited(page, live_server, superuser):
    demo_data_load()
    _login(page, live_server, superuser)

    page.goto(f"{live_server.url}/admin/audit/auditlog/")
    page.wait_for_selector("#result_list")
    page.locator("#result_list tbody tr th a").first.click()
    page.wait_for_selector("#content-main")

    form = page.locator("#content-main")
    assert form.locator("input[name=_save], input[name=_continue], input[type=submit]").count() == 0
    editable = form.locator("input:not([type=hidden]), textarea, select, [contenteditable=true]")
    assert editable.count() == 0
    assert page.locator("a.deletelink").count() == 0
    _screenshot(page, "audit_entry")


# An operator's laptop: the whole dashboard table must fit, no column hidden behind a horizontal scroll.
NARROW_WIDTH = 1400
_TABLE_EDGES = """() => {
    const table = document.querySelector('#result_list');
    const headers = [...table.querySelectorAll('thead th')].map(th => [
        (th.className.match(/column-(\\S+)/) || [null, th.textContent.trim()])[1],
        Math.round(th.getBoundingClientRect().right),
    ]);
    return {viewport: document.documentElement.clientWidth, table: Math.round(table.getBoundingClientRect().right),
            headers};
}"""


@pytest.mark.parametrize("path", [DASHBOARD, "/admin/controllers/mediahandler/"])
def test_every_dashboard_column_is_visible_at_1400_px(chromium, live_server, operator_user, path):
    demo_data_load()
    context = chromium.new_context(viewport={"width": NARROW_WIDTH, "height": 900})
    try:
        page = context.new_page()
        page.set_default_timeout(15_000)
        _login(page, live_server, operator_user)
        page.goto(f"{live_server.url}{path}")
        page.wait_for_selector("#result_list")

        edges = page.evaluate(_TABLE_EDGES)

        assert edges["viewport"] <= NARROW_WIDTH
        cut = [(name, right) for name, right in edges["headers"] if right > edges["viewport"]]
        assert not cut, f"columns past the {edges['viewport']} px viewport: {cut}"
        assert edges["table"] <= edges["viewport"], edges
        _screenshot(page, f"dashboard_{NARROW_WIDTH}px_{path.strip('/').split('/')[-1]}")
    finally:
        context.close()
