"""audit_logs is append-only in the database: UPDATE, DELETE and TRUNCATE are refused, except the foreign key's own
ON DELETE SET NULL of actor_user_id when a user is deleted, and whole-partition drops by the retention job."""

from __future__ import annotations

from datetime import date

import pytest
from django.core.management import call_command
from django.db import DatabaseError, connection, transaction
from django.db.migrations.executor import MigrationExecutor
from django.urls import reverse

from accounts.models import User
from audit.models import AuditLog
from audit.partitions import audit_partitions_drop_older_than, audit_partitions_ensure, audit_partitions_list
from audit.services import audit_record
from tests.factories import make_user
from tests.fixtures.sql import sql, sql_value

pytestmark = pytest.mark.django_db


def _row(*, actor: User | None = None, created_at: str | None = None) -> int:
    if created_at is None:
        audit_record(
            event_type="probe", action="probe", actor_type="user" if actor else "system",
            actor_user_id=actor.pk if actor else None, target_type="thing", target_id="1", metadata={"n": 1},
        )
        return AuditLog.objects.latest("id").pk
    return sql_value(
        "INSERT INTO audit_logs (event_type, actor_type, action, result, created_at) "
        "VALUES ('probe', 'system', 'probe', 'success', %s) RETURNING id",
        [created_at],
    )


def _refused(query: str, params: object = None) -> str:
    with pytest.raises(DatabaseError) as failure, transaction.atomic():
        sql(query, params)
    return str(failure.value)


def _columns(row_id: int) -> dict[str, object]:
    return AuditLog.objects.filter(pk=row_id).values().get()


@pytest.mark.parametrize("assignment", [
    "metadata = '{}'", "result = 'failure'", "created_at = created_at - interval '1 day'", "actor_user_id = NULL",
])
def test_an_update_is_refused(assignment):
    row_id = _row(actor=make_user())
    before = _columns(row_id)

    message = _refused(f"UPDATE audit_logs SET {assignment} WHERE id = %s", [row_id])

    assert "audit_logs is append-only" in message
    assert _columns(row_id) == before


def test_an_orm_update_is_refused_too():
    row_id = _row()
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(pk=row_id).update(error_message="rewritten")
    assert _columns(row_id)["error_message"] is None


def test_a_delete_is_refused():
    row_id = _row()
    _row(created_at="2099-01-10T00:00:00Z")  # no partition for that month: the default partition holds it

    assert "audit_logs is append-only" in _refused("DELETE FROM audit_logs WHERE id = %s", [row_id])
    assert "audit_logs is append-only" in _refused("DELETE FROM audit_logs_default")
    with pytest.raises(DatabaseError, match="append-only"), transaction.atomic():
        AuditLog.objects.filter(pk=row_id).delete()
    assert AuditLog.objects.filter(pk=row_id).exists()


def test_a_row_in_a_partition_created_later_is_protected_too():
    # Row triggers on the parent are cloned onto every partition, including those attached after the migration.
    month = date(2091, 3, 1)
    assert audit_partitions_ensure(months_ahead=0, start_month=month) == ["audit_logs_y2091m03"]
    row_id = _row(created_at="2091-03-10T00:00:00Z")

    assert "append-only" in _refused("DELETE FROM audit_logs_y2091m03 WHERE id = %s", [row_id])
    assert "append-only" in _refused("UPDATE audit_logs_y2091m03 SET action = 'x' WHERE id = %s", [row_id])


def test_truncating_the_table_is_refused():
    row_id = _row()

    assert "audit_logs is append-only" in _refused("TRUNCATE audit_logs")
    # Truncating users would take audit_logs along (CASCADE): refused the same.
    assert "audit_logs is append-only" in _refused("TRUNCATE users CASCADE")
    assert AuditLog.objects.filter(pk=row_id).exists()


def test_deleting_a_user_sets_its_audit_rows_actor_to_null_and_changes_nothing_else():
    user, bystander = make_user(), make_user()
    mine, theirs = _row(actor=user), _row(actor=bystander)
    before = _columns(mine)

    User.objects.filter(pk=user.pk).delete()

    assert _columns(mine) == {**before, "actor_user_id": None}
    assert _columns(theirs)["actor_user_id"] == bystander.pk


def test_a_hand_written_update_to_null_of_a_user_that_still_exists_is_refused():
    user = make_user()
    row_id = _row(actor=user)

    assert "append-only" in _refused("UPDATE audit_logs SET actor_user_id = NULL WHERE id = %s", [row_id])
    assert _columns(row_id)["actor_user_id"] == user.pk


def test_moving_rows_out_of_the_default_partition_still_works():
    month = date(2092, 5, 1)
    row_id = _row(created_at="2092-05-10T00:00:00Z")
    assert sql_value("SELECT tableoid::regclass::text FROM audit_logs WHERE id = %s", [row_id]) == "audit_logs_default"

    audit_partitions_ensure(months_ahead=0, start_month=month)

    assert sql_value("SELECT tableoid::regclass::text FROM audit_logs WHERE id = %s", [row_id]) == "audit_logs_y2092m05"
    # Only the move was let through: the default partition refuses a delete again.
    _row(created_at="2093-01-10T00:00:00Z")
    assert "append-only" in _refused("DELETE FROM audit_logs_default")


def test_retention_detaches_and_drops_whole_months():
    month = date(2001, 1, 1)
    audit_partitions_ensure(months_ahead=0, start_month=month)
    _row(created_at="2001-01-15T00:00:00Z")

    assert audit_partitions_drop_older_than(months=1) == ["audit_logs_y2001m01"]

    assert "audit_logs_y2001m01" not in {partition.name for partition in audit_partitions_list()}
    assert not sql("SELECT 1 FROM audit_logs WHERE created_at < '2002-01-01'")


def test_the_flush_command_can_still_empty_the_database():
    """The test runner's flush (TRUNCATE ... CASCADE) is the owner's: it lifts the TRUNCATE guard inside its
    own transaction only."""
    _row()
    with transaction.atomic():
        call_command("flush", interactive=False, verbosity=0)
        assert not AuditLog.objects.exists()
        # Back on before the transaction ends: no other session ever sees the guard off.
        enabled = sql_value(
            "SELECT tgenabled FROM pg_trigger "
            "WHERE tgrelid = 'audit_logs'::regclass AND tgname = 'audit_logs_no_truncate'"
        )
        assert enabled == "O"
        transaction.set_rollback(True)
    assert "append-only" in _refused("TRUNCATE audit_logs")


def test_a_superuser_deletes_a_user_through_the_admin(client):
    root = make_user(is_staff=True, is_superuser=True)
    user = make_user()
    row_id = _row(actor=user)
    client.force_login(root)

    response = client.post(reverse("admin:accounts_user_delete", args=[user.pk]), {"post": "yes"})

    assert response.status_code == 302, response.content[:500]
    assert not User.objects.filter(pk=user.pk).exists()
    assert _columns(row_id)["actor_user_id"] is None
    assert connection.in_atomic_block  # the test's transaction is still usable


def _guards() -> set[tuple[str, str]]:
    """(table, trigger) of every append-only trigger on audit_logs and its partitions."""
    return set(sql(
        "SELECT tgrelid::regclass::text, tgname FROM pg_trigger "
        "WHERE tgname IN ('audit_logs_append_only', 'audit_logs_no_truncate')"
    ))


@pytest.mark.django_db(transaction=True)
def test_the_migration_rolls_back_and_forward():
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    partitions = {partition.name for partition in audit_partitions_list()}
    row_id = _row(actor=make_user())
    try:
        MigrationExecutor(connection).migrate([("audit", "0005_column_comments")])
        assert _guards() == set()
        sql("UPDATE audit_logs SET action = 'rewritten' WHERE id = %s", [row_id])  # unguarded at 0005

        MigrationExecutor(connection).migrate(leaves)
    finally:
        MigrationExecutor(connection).migrate(leaves)
    assert _guards() == {("audit_logs", "audit_logs_no_truncate")} | {
        (table, "audit_logs_append_only") for table in {"audit_logs", *partitions}
    }
    assert "append-only" in _refused("UPDATE audit_logs SET action = 'again' WHERE id = %s", [row_id])
