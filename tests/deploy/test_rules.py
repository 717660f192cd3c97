"""The shipped Prometheus rules: promtool accepts every rules file, every unit test passes, and every alert is
tested both firing and quiet, carries what an operator needs (severity, summary, description, runbook) and has its
entry in the README's "Alerts and dashboards" section."""

from __future__ import annotations

import yaml

from tests.deploy.conftest import UNIT_TESTS_DIR, alerts, rules, rules_files, run_promtool, unit_test_files
from tools.devenv import ROOT


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


def _readme_section() -> str:
    readme = (ROOT / "README.md").read_text()
    assert "\n## Alerts and dashboards\n" in readme
    return readme.split("\n## Alerts and dashboards\n", 1)[1].split("\n## ", 1)[0]


def test_every_alert_has_a_runbook_entry_in_the_readme():
    section = _readme_section()
    for alert in alerts():
        assert f"| `{alert['alert']}` | {alert['labels']['severity']} |" in section, alert["alert"]


def test_the_readme_names_every_recording_rule():
    section = _readme_section()
    for rule in rules():
        if "record" in rule:
            assert f"`{rule['record']}`" in section, rule["record"]
