"""updated_at is the trigger's job, not the ORM's: a raw SQL UPDATE bumps it on every table that has it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from django.utils import timezone

from accounts.models import ApiKey, OAuthProvider, ServiceCredential
from controllers.members import CONTROLLERS, HANDLERS
from controllers.services.beats import Beat, beats_record
from meetings.models import Recording
from tests.factories import make_controller, make_handler, make_meeting, make_user
from tests.fixtures.sql import sql, sql_value

OLD = datetime(2001, 1, 1, tzinfo=UTC)

# table -> (primary key column, an UPDATE of another column)
TRIGGERED = {
    "users": ("user_id", "display_name = 'Renamed'"),
    "oauth_providers": ("id", "provider_user_id = 'other'"),
    "api_keys": ("key_id", "is_active = false"),
    "meetings": ("meeting_id", "display_name = 'Renamed'"),
    "recordings": ("recording_id", "status = 'processing'"),
    "meeting_controllers": ("controller_id", "current_meetings = current_meetings + 1"),
    "media_handlers": ("handler_id", "current_streams = current_streams + 1"),
    "service_credentials": ("id", "is_active = false"),
}


def _row_with_old_updated_at(table: str):
    """Insert with an old updated_at (an INSERT does not fire the trigger; an UPDATE to set it would)."""
    if table == "users":
        return make_user(updated_at=OLD).pk
    if table in ("oauth_providers", "api_keys"):
        user = make_user()
        if table == "api_keys":
            return ApiKey.objects.create(
                user=user, key_hash="h", key_prefix="dt_", name="k", scopes=["a"], updated_at=OLD
            ).pk
        return OAuthProvider.objects.create(user=user, provider="github", provider_user_id="1", updated_at=OLD).pk
    if table == "meetings":
        return make_meeting(updated_at=OLD).pk
    if table == "recordings":
        return Recording.objects.create(
            meeting=make_meeting(), started_at=timezone.now(), storage_path="p", storage_bucket="b", updated_at=OLD
        ).pk
    if table == "meeting_controllers":
        return make_controller(updated_at=OLD).pk
    if table == "media_handlers":
        return make_handler(updated_at=OLD).pk
    return ServiceCredential.objects.create(client_id="c", name="n", secret_hash="h", updated_at=OLD).pk


@pytest.mark.django_db
@pytest.mark.parametrize("table", TRIGGERED)
def test_a_raw_update_bumps_updated_at(table):
    pk_column, assignment = TRIGGERED[table]
    pk = _row_with_old_updated_at(table)
    assert sql_value(f"SELECT updated_at FROM {table} WHERE {pk_column} = %s", [pk]) == OLD

    sql(f"UPDATE {table} SET {assignment} WHERE {pk_column} = %s", [pk])

    # now() is the transaction's start: the trigger stamped this very transaction.
    assert sql_value(f"SELECT updated_at = now() FROM {table} WHERE {pk_column} = %s", [pk]) is True


@pytest.mark.django_db
def test_an_update_cannot_backdate_updated_at():
    pk = make_controller().pk

    sql("UPDATE meeting_controllers SET updated_at = %s WHERE controller_id = %s", [OLD, pk])

    assert sql_value("SELECT updated_at = now() FROM meeting_controllers WHERE controller_id = %s", [pk]) is True


@pytest.mark.django_db
def test_every_table_with_updated_at_has_the_trigger():
    with_column = {
        table for (table,) in sql("SELECT table_name FROM information_schema.columns WHERE table_schema = 'public' "
                                  "AND column_name = 'updated_at' AND table_name NOT LIKE 'django_%%'")
    }
    with_trigger = {
        table for (table,) in sql("SELECT tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal "
                                  "AND tgname LIKE 'pgtrigger_%%_touch_updated_at_%%'")
    }

    assert set(TRIGGERED) <= with_trigger
    assert with_column == with_trigger


@pytest.mark.django_db
@pytest.mark.parametrize(("table", "kind"), [("meeting_controllers", CONTROLLERS), ("media_handlers", HANDLERS)])
def test_the_members_trigger_runs_its_function_only_when_updated_at_is_not_now_already(table, kind):
    # The heartbeat flush stamps updated_at itself; the WHEN spares PostgreSQL a PL/pgSQL call per row.
    definition = sql_value("SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s::regclass "
                           "AND tgname LIKE 'pgtrigger_%%_touch_updated_at_%%'", [table])
    assert "WHEN ((new.updated_at IS DISTINCT FROM now()))" in definition
    pk_column, _ = TRIGGERED[table]
    pk = _row_with_old_updated_at(table)

    beats_record(kind=kind, beats=[Beat(pk, "healthy", {})])

    assert sql_value(f"SELECT updated_at = now() FROM {table} WHERE {pk_column} = %s", [pk]) is True
