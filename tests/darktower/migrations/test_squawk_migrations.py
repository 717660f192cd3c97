"""The squawk check over new migrations (tools/squawk_migrations.py): it runs the real squawk over the SQL that
sqlmigrate prints, fails on any finding a migration does not justify, and passes a justified one."""

from __future__ import annotations

from pathlib import Path

import pytest
from django.db import connection, migrations
from django.db.migrations.state import ProjectState

from darktower.migration import SafeMigration
from tools import squawk_migrations as check

pytestmark = pytest.mark.django_db

ADD_CHECK = 'ALTER TABLE "meeting_assignments" ADD CONSTRAINT "probe_chk" CHECK ("reserved_participants" >= 0)'
JUSTIFIED = "# squawk: constraint-missing-not-valid: the probe table is empty when this runs\n"


def _sqlmigrate(migration: migrations.Migration) -> str:
    """What `manage.py sqlmigrate` prints for `migration`: its collected SQL, in BEGIN/COMMIT when atomic."""
    with connection.schema_editor(collect_sql=True, atomic=migration.atomic) as schema_editor:
        migration.apply(ProjectState(), schema_editor, collect_sql=True)
    body = "\n".join(schema_editor.collected_sql)
    return f"BEGIN;\n{body}\nCOMMIT;\n" if migration.atomic else f"{body}\n"


def _probe(base: type[migrations.Migration], sql: str) -> migrations.Migration:
    class Migration(base):  # type: ignore[valid-type, misc]
        operations = [migrations.RunSQL(sql, migrations.RunSQL.noop)]

    return Migration("0001_probe", "probe")


def _check(tmp_path: Path, source: str, sql: str) -> dict[str, list[str]]:
    """The check over one synthetic migration: its file holds `source`, sqlmigrate would print `sql`."""
    path = tmp_path / "probe" / "migrations" / "0001_probe.py"
    path.parent.mkdir(parents=True)
    path.write_text(source)
    return check.check([check.MigrationFile("probe", "0001_probe", path)], render=lambda migration: sql)


def test_the_migrations_newer_than_the_baseline_pass():
    assert check.check(check.migrations_to_check()) == {}


def test_the_baseline_lists_the_newest_migration_it_was_taken_at(tmp_path):
    for app, head in check.BASELINE.items():
        assert sorted(check.ROOT.glob(f"{app}/migrations/{head}_*.py")), f"{app} has no migration {head}"
    (tmp_path / "meetings" / "migrations").mkdir(parents=True)
    for name in ("0006_landed.py", "0007_new.py"):
        (tmp_path / "meetings" / "migrations" / name).write_text("")
    assert [row.label for row in check.migrations_to_check(root=tmp_path)] == ["meetings.0007_new"]


def test_the_check_finds_what_squawk_finds_in_a_landed_migration():
    # meetings 0002 adds a CHECK that scans meeting_assignments under ACCESS EXCLUSIVE, without a lock timeout:
    # landed before the baseline, it is what the check exists to stop.
    landed = [row for row in check.migrations_to_check({"meetings": "0001"}) if row.name.startswith("0002_")]

    problems = check.check(landed)

    listed = problems["meetings.0002_assignment_reserved_participants"]
    assert any("constraint-missing-not-valid" in problem for problem in listed)
    assert any("require-lock-timeout" in problem for problem in listed)


def test_a_plain_migration_fails_for_want_of_a_lock_timeout(tmp_path):
    sql = _sqlmigrate(_probe(migrations.Migration, 'ALTER TABLE "media_handlers" ADD COLUMN "note" text NULL'))

    problems = _check(tmp_path, "", sql)

    assert [problem.split(": ")[1] for problem in problems["probe.0001_probe"]] == ["require-lock-timeout"]


def test_a_safe_migration_adding_a_nullable_column_passes(tmp_path):
    sql = _sqlmigrate(_probe(SafeMigration, 'ALTER TABLE "media_handlers" ADD COLUMN "note" text NULL'))

    assert sql.startswith("BEGIN;\nSET LOCAL lock_timeout = '2s';\n")
    assert _check(tmp_path, "", sql) == {}


def test_an_unjustified_finding_fails_and_a_justified_one_passes(tmp_path):
    sql = _sqlmigrate(_probe(SafeMigration, ADD_CHECK))

    unjustified = _check(tmp_path / "a", "", sql)
    justified = _check(tmp_path / "b", f"from darktower.migration import SafeMigration\n\n{JUSTIFIED}", sql)

    assert len(unjustified["probe.0001_probe"]) == 1
    assert "constraint-missing-not-valid" in unjustified["probe.0001_probe"][0]
    assert justified == {}


def test_not_valid_then_validate_passes_without_a_justification(tmp_path):
    sql = _sqlmigrate(_probe(SafeMigration, f"{ADD_CHECK} NOT VALID"))
    sql += _sqlmigrate(_probe(SafeMigration, 'ALTER TABLE "meeting_assignments" VALIDATE CONSTRAINT "probe_chk"'))

    assert _check(tmp_path, "", sql) == {}


def test_a_justification_that_matches_no_finding_fails(tmp_path):
    sql = _sqlmigrate(_probe(SafeMigration, 'ALTER TABLE "media_handlers" ADD COLUMN "note" text NULL'))

    problems = _check(tmp_path, JUSTIFIED, sql)

    assert problems == {"probe.0001_probe": ["justification for constraint-missing-not-valid matches no finding"]}


def test_a_justification_needs_a_reason():
    assert check.justifications(JUSTIFIED) == {
        "constraint-missing-not-valid": "the probe table is empty when this runs"
    }
    assert check.justifications("# squawk: constraint-missing-not-valid:\n# squawk: nothing\n") == {}


def test_an_index_on_a_hot_table_is_built_concurrently_in_a_non_atomic_migration(tmp_path):
    plain = _sqlmigrate(_probe(SafeMigration, 'CREATE INDEX "probe_idx" ON "media_handlers" ("region")'))
    concurrent = _probe(
        SafeMigration, 'CREATE INDEX CONCURRENTLY IF NOT EXISTS "probe_idx" ON "media_handlers" ("region")'
    )
    concurrent.atomic = False

    problems = _check(tmp_path / "a", "", plain)
    sql = _sqlmigrate(concurrent)

    assert [problem.split(": ")[1] for problem in problems["probe.0001_probe"]] == ["require-concurrent-index-creation"]
    assert sql.startswith("SET lock_timeout = '2s';\n")
    assert _check(tmp_path / "b", "", sql) == {}
