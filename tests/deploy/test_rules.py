"""The shipped Prometheus rules: promtool accepts every rules file, every unit test passes, and every alert is
tested both firing and quiet, and carries what an operator needs (severity, summary, description, runbook)."""

from __future__ import annotations

import yaml

from tests.deploy.conftest import UNIT_TESTS_DIR, alerts, rules_files, run_promtool, unit_test_files


def test_promtool_checks_every_rules_file(promtool):
    assert rules_files()
    result = run_promtool(promtool, "check", "rules", *rules_files())

    assert result.returncode == 0, result.stdout + result.stderr


def test_the_alerts_unit_tests_pass(promtool):
    assert unit_test_files()
    result = run_promtool(promtool, "test", "rules", *unit_test_files())

    assert result.returncode == 0, result.stdout + result.stderr


def test_every_unit_test_file_loads_every_rules_file():
    """An alert reading a recording rule evaluates to nothing when that file is not loaded: a silent pass."""
    expected = {path.name for path in rules_files()}
    for path in unit_test_files():
        loaded = {(UNIT_TESTS_DIR / name).resolve().name for name in yaml.safe_load(path.read_text())["rule_files"]}
        assert loaded == expected, path.name


def test_every_alert_is_tested_firing_and_quiet():
    firing: set[str] = set()
    quiet: set[str] = set()
    for path in unit_test_files():
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {alert["alert"] for alert in alerts()}

    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested quiet"
    assert (firing | quiet) - names == set(), "tests of alerts that do not exist"


def test_every_alert_says_what_to_do():
    for alert in alerts():
        assert alert["labels"]["severity"] in {"critical", "warning"}, alert["alert"]
        annotations = alert["annotations"]
        assert annotations["summary"] and annotations["description"], alert["alert"]
        assert annotations["runbook"] == f"README.md, Alerts and dashboards: {alert['alert']}"
