"""Fixtures of the deploy/ tests: promtool (Debian's prometheus package), the shipped files, and the running gRPC
server of tests/grpc."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.controllers.grpc.conftest import (  # noqa: F401 (fixtures, found by their names)
    auth,
    channel,
    grpc_server,
    mc_stub,
    roomy_grpc_rate_limits,
    service_credential,
)
from tools.devenv import ROOT

DEPLOY = ROOT / "deploy"
RULES_DIR = DEPLOY / "prometheus" / "rules"
UNIT_TESTS_DIR = DEPLOY / "prometheus" / "tests"
DASHBOARD = DEPLOY / "grafana" / "darktower.json"


def rules_files() -> list[Path]:
    return sorted(RULES_DIR.glob("*.yml"))


def unit_test_files() -> list[Path]:
    return sorted(UNIT_TESTS_DIR.glob("*.yml"))


def rules() -> list[dict]:
    """Every rule of every rules file, recording and alerting."""
    return [rule for path in rules_files() for group in yaml.safe_load(path.read_text())["groups"]
            for rule in group["rules"]]


def alerts() -> list[dict]:
    return [rule for rule in rules() if "alert" in rule]


@pytest.fixture(scope="session")
def promtool() -> str:
    """promtool, from Debian's prometheus package: installed with apt-get when missing; fails (never skips) when
    that is impossible."""
    found = shutil.which("promtool")
    if found:
        return found
    apt = shutil.which("apt-get")
    if apt is None:
        pytest.fail("promtool is missing and apt-get is not available: install Debian's prometheus package.")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt, "update"], [apt, "install", "-y", "--no-install-recommends", "prometheus"]):
        result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900, check=False)
        if result.returncode != 0:
            pytest.fail(
                f"promtool is missing and `{' '.join(command)}` failed (exit {result.returncode}); the deploy tests "
                f"need Debian's prometheus package.\n{result.stderr[-2000:]}"
            )
    found = shutil.which("promtool")
    if found is None:
        pytest.fail("apt-get installed prometheus but promtool is not on PATH.")
    return found


def run_promtool(promtool: str, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *map(str, args)], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          check=False)


# What Grafana puts in place of the dashboard's template variables when every region is selected.
TEMPLATE_VALUES = {"${region}": ".*", "$region": ".*"}


def dashboard() -> dict:
    return json.loads(DASHBOARD.read_text())


def dashboard_panels() -> list[dict]:
    """The panels that draw something (rows excluded), nested in collapsed rows or not."""
    found = []
    for panel in dashboard()["panels"]:
        if panel["type"] == "row":
            found += panel.get("panels", [])
        else:
            found.append(panel)
    return found


def dashboard_exprs() -> dict[str, str]:
    """Every query of the dashboard's panels, its template variables replaced, by panel title and refId."""
    exprs = {}
    for panel in dashboard_panels():
        for target in panel["targets"]:
            expr = target["expr"]
            for variable, value in TEMPLATE_VALUES.items():
                expr = expr.replace(variable, value)
            exprs[f"dashboard {panel['title']} {target['refId']}"] = expr
    return exprs
