"""squawk over the SQL of every migration newer than the baseline; fails on any finding not justified.

Run it with the database up (sqlmigrate renders SQL through a connection):

    python -m tools.devenv exec -- .venv/bin/python tools/squawk_migrations.py     (make squawk)

The migrations up to BASELINE landed before this check and stay as they are. A finding that a newer migration
accepts on purpose is justified in that migration's own file, by a comment naming the rule and the reason:

    # squawk: constraint-missing-not-valid: meeting_regions holds a few dozen rows; the scan takes no time

A justification covers that rule in that migration only. One that matches no finding fails the check too, so
that none outlives the statement it was written for. The rules and the PostgreSQL version are in .squawk.toml.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / ".squawk.toml"

# The newest migration of each app when the check began: these and older ones are not checked. An app missing
# here is checked from its first migration.
BASELINE = {"accounts": "0005", "audit": "0006", "controllers": "0011", "meetings": "0006"}

JUSTIFICATION = re.compile(r"^\s*#\s*squawk:\s*(?P<rule>[a-z0-9-]+)\s*:\s*(?P<reason>\S.*?)\s*$")


@dataclass(frozen=True)
class MigrationFile:
    app: str
    name: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.app}.{self.name}"


@dataclass(frozen=True)
class Finding:
    rule: str
    line: int
    message: str


def migrations_to_check(baseline: dict[str, str] = BASELINE, root: Path = ROOT) -> list[MigrationFile]:
    """Every migration file of the project's apps numbered above its app's baseline, in order."""
    found = []
    for path in sorted(root.glob("*/migrations/[0-9][0-9][0-9][0-9]_*.py")):
        app = path.parent.parent.name
        if path.stem[:4] > baseline.get(app, "0000"):
            found.append(MigrationFile(app=app, name=path.stem, path=path))
    return found


def justifications(source: str) -> dict[str, str]:
    """The `# squawk: <rule>: <reason>` comments of a migration's source, rule -> reason."""
    return {
        match["rule"]: match["reason"]
        for match in (JUSTIFICATION.match(line) for line in source.splitlines())
        if match
    }


def squawk_binary() -> str:
    """squawk from requirements-dev.txt (squawk-cli's wheel puts it beside this Python), else from PATH."""
    beside = Path(sys.executable).parent / "squawk"
    if beside.exists():
        return str(beside)
    found = shutil.which("squawk")
    if found is None:
        raise RuntimeError("squawk is not installed: pip install -r requirements-dev.txt")
    return found


def squawk(sql_by_label: dict[str, str]) -> dict[str, list[Finding]]:
    """Run squawk once over the SQL of several migrations; findings per label (labels without any included)."""
    findings: dict[str, list[Finding]] = {label: [] for label in sql_by_label}
    if not sql_by_label:
        return findings
    with tempfile.TemporaryDirectory() as folder:
        files = {}
        for label, sql in sql_by_label.items():
            path = Path(folder) / f"{label}.sql"
            path.write_text(sql)
            files[str(path)] = label
        # An argv list of our own (the binary, our config, files we wrote): no shell, no outside input.
        run = subprocess.run(  # noqa: S603
            [squawk_binary(), "--config", str(CONFIG), "--reporter", "json", *files],
            capture_output=True, text=True, check=False,
        )
    if run.returncode not in (0, 1):
        raise RuntimeError(f"squawk failed (exit {run.returncode}): {run.stderr.strip()}")
    for item in json.loads(run.stdout or "[]"):
        findings[files[item["file"]]].append(
            Finding(rule=item["rule_name"], line=item["line"] + 1, message=item["message"])
        )
    return findings


def unjustified(findings: list[Finding], justified: dict[str, str]) -> list[str]:
    """What fails the check for one migration: findings of rules it does not justify, justifications unused."""
    problems = [f"line {row.line}: {row.rule}: {row.message}" for row in findings if row.rule not in justified]
    used = {row.rule for row in findings}
    problems += [f"justification for {rule} matches no finding" for rule in justified if rule not in used]
    return problems


def render_sql(migration: MigrationFile) -> str:
    """The SQL that `manage.py sqlmigrate` prints for a migration."""
    from django.core.management import call_command

    out = io.StringIO()
    call_command("sqlmigrate", migration.app, migration.name, stdout=out, no_color=True)
    return out.getvalue()


def check(
    migrations: list[MigrationFile], render: Callable[[MigrationFile], str] = render_sql
) -> dict[str, list[str]]:
    """The problems of each migration that has any, by label."""
    found = squawk({migration.label: render(migration) for migration in migrations})
    problems = {}
    for migration in migrations:
        listed = unjustified(found[migration.label], justifications(migration.path.read_text()))
        if listed:
            problems[migration.label] = listed
    return problems


def main() -> int:
    sys.path.insert(0, str(ROOT))
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "darktower.settings")
    import django

    django.setup()
    migrations = migrations_to_check()
    problems = check(migrations)
    for label, listed in problems.items():
        for problem in listed:
            print(f"{label}: {problem}", file=sys.stderr)
    print(f"squawk: {len(migrations)} migration(s) newer than the baseline checked, {len(problems)} with problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
