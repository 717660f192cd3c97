"""The local OpenID provider the sign-in tests talk to: the npm package `oidc-provider` (pinned in
tests/peers/oidc/package-lock.json) under Debian's nodejs, on a loopback port, started and stopped by the tests.

`npm ci` installs it when node_modules is missing (or stale); a missing node or npm, or a failed install, fails the test
(never skips it): the sign-in tests need a real provider.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Sequence
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urljoin

import pytest
import requests

PEER_DIR = Path(__file__).resolve().parent / "oidc"
CLIENT_ID = "darktower-gc"
CLIENT_SECRET = "test-peer-client-secret"
START_TIMEOUT_SECONDS = 30
_install_lock = threading.Lock()


def peer_install() -> None:
    """`npm ci` from the committed lock file when node_modules is missing or was installed from another lock file.

    A stamp holding the lock file's hash is written after a complete install, so an interrupted one is redone.
    pytest-xdist workers are processes: a file lock makes one install while the others wait for it."""
    lock_file = PEER_DIR / "package-lock.json"
    stamp = PEER_DIR / "node_modules" / ".darktower-installed"
    wanted = hashlib.sha256(lock_file.read_bytes()).hexdigest()
    with _install_lock, open(PEER_DIR / ".install.lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        if stamp.exists() and stamp.read_text() == wanted:
            return
        npm = shutil.which("npm")
        if shutil.which("node") is None or npm is None:
            pytest.fail("node and npm are required for the OpenID Connect tests: install Debian's nodejs and npm.")
        result = subprocess.run(
            [npm, "ci", "--no-audit", "--no-fund"], cwd=PEER_DIR, capture_output=True, text=True, timeout=600,
            check=False,
        )
        if result.returncode != 0:
            pytest.fail(f"`npm ci` in {PEER_DIR} failed (exit {result.returncode}):\n{result.stderr[-2000:]}")
        stamp.write_text(wanted)


class OidcPeer:
    """One running provider with one confidential client registered for `redirect_uris`."""

    def __init__(self, redirect_uris: Sequence[str]) -> None:
        peer_install()
        env = {
            **os.environ, "OIDC_PEER_CLIENT_ID": CLIENT_ID, "OIDC_PEER_CLIENT_SECRET": CLIENT_SECRET,
            "OIDC_PEER_REDIRECT_URIS": ",".join(redirect_uris), "NODE_NO_WARNINGS": "1",
        }
        self.process = subprocess.Popen(
            [shutil.which("node") or "node", "server.mjs"], cwd=PEER_DIR, env=env,
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        assert self.process.stdout is not None
        # The server prints its issuer once it listens; readline blocks until then (or until it exits).
        timer = threading.Timer(START_TIMEOUT_SECONDS, self.process.kill)
        timer.start()
        try:
            line = self.process.stdout.readline()
        finally:
            timer.cancel()
        if not line:
            self.process.wait()
            pytest.fail(f"the OpenID test peer exited before listening (exit {self.process.returncode})")
        self.issuer: str = json.loads(line)["issuer"]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


class _Form(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.action: str | None = None
        self.fields: dict[str, str] = {}

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "form" and self.action is None:
            self.action = values.get("action")
        elif tag == "input" and values.get("name"):
            self.fields[values["name"] or ""] = values.get("value") or ""


def peer_sign_in(authorization_url: str, *, login: str, redirect_prefix: str,
                 session: requests.Session | None = None) -> str:
    """Walk the provider's development login and consent pages as a browser would, and return the URL the
    provider finally redirects to (our callback, with code and state), without requesting it."""
    http = session or requests.Session()
    url = authorization_url
    for _ in range(20):
        if url.startswith(redirect_prefix):
            return url
        response = http.get(url, allow_redirects=False, timeout=10)
        while response.status_code == 200:
            form = _Form()
            form.feed(response.text)
            if form.action is None:
                raise AssertionError(f"the provider showed a page without a form: {response.text[:500]}")
            data = dict(form.fields)
            if data.get("prompt") == "login":
                data.update(login=login, password="any")
            response = http.post(urljoin(url, form.action), data=data, allow_redirects=False, timeout=10)
            url = response.url
        if response.status_code not in (302, 303):
            raise AssertionError(f"the provider answered {response.status_code}: {response.text[:500]}")
        url = urljoin(url, response.headers["Location"])
    raise AssertionError("the provider kept redirecting")
