"""The migration history: a fresh database has the expected schema, the models and migrations agree, every
migration renders as SQL both ways, and the controllers history (the first schema to the registration schema)
keeps every row."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from io import StringIO

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader

from tests.fixtures.sql import sql, sql_value, violated_constraint

OUR_APPS = ("accounts", "meetings", "controllers", "audit")

SEED_TABLES = {
    "users", "oauth_providers", "meetings", "meeting_participants", "recordings",
    "meeting_controllers", "media_handlers", "audit_logs", "api_keys",
}

# Every index the first schema defines (and the registration schema's partial index): name -> (table, indexed columns).
SEED_INDEXES = {
    "idx_users_email": ("users", "email"),
    "idx_users_created_at": ("users", "created_at"),
    "idx_oauth_user_id": ("oauth_providers", "user_id"),
    "idx_meetings_created_by": ("meetings", "created_by_user_id"),
    "idx_meetings_meeting_code": ("meetings", "meeting_code"),
    "idx_meetings_status": ("meetings", "status"),
    "idx_meetings_scheduled_start": ("meetings", "scheduled_start_time"),
    "idx_meetings_controller": ("meetings", "assigned_controller_id"),
    "idx_participants_meeting_id": ("meeting_participants", "meeting_id"),
    "idx_participants_user_id": ("meeting_participants", "user_id"),
    "idx_participants_joined_at": ("meeting_participants", "joined_at"),
    "idx_recordings_meeting_id": ("recordings", "meeting_id"),
    "idx_recordings_started_by": ("recordings", "started_by_user_id"),
    "idx_recordings_status": ("recordings", "status"),
    "idx_controllers_region": ("meeting_controllers", "region"),
    "idx_controllers_health": ("meeting_controllers", "health_status"),
    "idx_controllers_heartbeat": ("meeting_controllers", "last_heartbeat_at"),
    "idx_handlers_region": ("media_handlers", "region"),
    "idx_handlers_health": ("media_handlers", "health_status"),
    "idx_audit_event_type": ("audit_logs", "event_type"),
    "idx_audit_actor": ("audit_logs", "actor_user_id"),
    "idx_audit_target": ("audit_logs", "target_type, target_id"),
    "idx_audit_created_at": ("audit_logs", "created_at"),
    "idx_api_keys_user_id": ("api_keys", "user_id"),
    "idx_api_keys_hash": ("api_keys", "key_hash"),
}

# The first schema's UNIQUE columns.
SEED_UNIQUES = {
    ("users", "email"),
    ("oauth_providers", "provider, provider_user_id"),
    ("meetings", "meeting_code"),
    ("meeting_participants", "meeting_id, participant_id"),
    ("api_keys", "key_hash"),
}


@pytest.mark.django_db
def test_the_fresh_database_has_every_seed_table_and_audit_logs_is_partitioned():
    kinds = dict(
        sql("SELECT relname, relkind FROM pg_class WHERE relnamespace = 'public'::regnamespace AND relname = ANY(%s)",
            [list(SEED_TABLES)])
    )

    assert kinds.keys() == SEED_TABLES
    assert kinds.pop("audit_logs") == "p"
    assert set(kinds.values()) == {"r"}


@pytest.mark.django_db
def test_every_seed_index_exists_under_the_seed_name_on_the_seed_columns():
    rows = sql("SELECT indexname, tablename, indexdef FROM pg_indexes WHERE schemaname = 'public'")
    found = {name: (table, definition) for name, table, definition in rows}

    for name, (table, columns) in SEED_INDEXES.items():
        assert name in found, f"missing index {name}"
        assert found[name][0] == table, name
        assert found[name][1].endswith(f"USING btree ({columns})"), found[name][1]


@pytest.mark.django_db
def test_the_placement_index_is_partial_over_the_available_states():
    definition = sql_value("SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_meeting_controllers_available'")

    assert definition.startswith("CREATE INDEX idx_meeting_controllers_available ON public.meeting_controllers")
    assert "(region, health_status)" in definition
    assert definition.endswith(
        "WHERE ((health_status)::text = ANY ((ARRAY['healthy'::character varying, "
        "'degraded'::character varying])::text[]))"
    )


@pytest.mark.django_db
def test_every_seed_unique_rule_is_a_unique_constraint():
    rows = sql(
        """SELECT conrelid::regclass::text, string_agg(attname, ', ' ORDER BY array_position(conkey, attnum))
           FROM pg_constraint JOIN pg_attribute ON attrelid = conrelid AND attnum = ANY(conkey)
           WHERE contype = 'u' AND connamespace = 'public'::regnamespace GROUP BY conrelid, conname"""
    )

    assert set(rows) >= SEED_UNIQUES


@pytest.mark.django_db
def test_models_and_migrations_agree():
    out = StringIO()

    call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)  # exits 1 on changes

    assert "No changes detected" in out.getvalue()


def _our_migrations() -> list[tuple[str, str]]:
    loader = MigrationLoader(None, ignore_no_migrations=True)
    return sorted(key for key in loader.disk_migrations if key[0] in OUR_APPS)


@pytest.mark.django_db
@pytest.mark.parametrize(("app", "name"), _our_migrations())
def test_every_migration_renders_as_sql_forwards_and_backwards(app, name):
    forwards, backwards = StringIO(), StringIO()

    call_command("sqlmigrate", app, name, stdout=forwards)
    call_command("sqlmigrate", app, name, "--backwards", stdout=backwards)  # IrreversibleError if not reversible

    assert forwards.getvalue().strip()
    assert backwards.getvalue().strip()


@pytest.mark.django_db
def test_the_registration_migration_follows_the_seeds_safe_order():
    out = StringIO()
    call_command("sqlmigrate", "controllers", "0002", stdout=out)
    text = out.getvalue()

    steps = [
        'ADD COLUMN "grpc_endpoint" varchar(255) NULL',
        'DROP CONSTRAINT "valid_health_status"',
        "CHECK (\"health_status\" IN ('pending', 'healthy', 'degraded', 'unhealthy', 'draining'))",
        "SET DEFAULT 'pending'",
        "UPDATE meeting_controllers SET grpc_endpoint = left(endpoint, 255) WHERE grpc_endpoint IS NULL",
        'ALTER COLUMN "grpc_endpoint" SET NOT NULL',
        'CREATE INDEX "idx_meeting_controllers_available"',
    ]
    positions = [text.find(step) for step in steps]
    assert -1 not in positions, [step for step, at in zip(steps, positions, strict=True) if at == -1]
    assert positions == sorted(positions)


# --- The controllers history: rows written under the first schema survive the registration migrations. ------

V1_COLUMNS = (
    "controller_id", "region", "endpoint", "max_meetings", "current_meetings", "max_participants",
    "current_participants", "health_status", "last_heartbeat_at", "version", "created_at", "metadata",
)
LONG_ENDPOINT = "grpc://" + "mc-é" * 70 + "x" * 13  # 300 characters, some of them two bytes in UTF-8
assert len(LONG_ENDPOINT) == 300
ANCIENT = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC)

LEGACY_ROWS = [
    # controller_id, region, endpoint, max_meetings, current_meetings, max_participants, current_participants,
    # health_status, last_heartbeat_at, version, created_at, metadata
    ("mc-plain", "us-east-1", "grpc://10.0.0.1:50052", 100, 3, 1000, 12, "healthy",
     datetime(2026, 1, 20, 12, 0, tzinfo=UTC), "1.0.0", datetime(2026, 1, 1, tzinfo=UTC), {}),
    ("mc-long", "eu-west-1", LONG_ENDPOINT, 50, 0, 500, 0, "degraded", ANCIENT, None, ANCIENT, None),
    ("mc-ünïcødé-🚀", "ap-south-1", "grpc://[2001:db8::1]:50052", 2147483647, 0, 2147483647, 0, "unhealthy",
     ANCIENT, "v2.0-βeta ✓", datetime(2025, 6, 30, 23, 59, 59, 999999, tzinfo=UTC),
     {"owner": "José Ñúñez", "tags": ["🚀", "東京"], "nested": {"empty": {}, "null": None, "n": 1.5}}),
    ("mc-exact-255", "us-east-1", "g" * 255, 1, 1, 1, 1, "healthy", ANCIENT, "", ANCIENT, {"": ""}),
    ("mc-empty-endpoint", "x", "", 0, 0, 0, 0, "unhealthy", ANCIENT, None, ANCIENT, []),
]


def _migrate(executor: MigrationExecutor, targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor.migrate(targets)
    return MigrationExecutor(connection)  # a fresh loader sees what is applied now


def _insert_legacy_rows() -> None:
    for row in LEGACY_ROWS:
        values = list(row)
        values[-1] = None if row[-1] is None else json.dumps(row[-1])
        sql(f"INSERT INTO meeting_controllers ({', '.join(V1_COLUMNS)}) VALUES ({', '.join(['%s'] * 12)})", values)
    # A row that takes every default of the 0001 schema.
    sql("INSERT INTO meeting_controllers (controller_id, region, endpoint, max_meetings, max_participants) "
        "VALUES ('mc-defaults', 'us-east-1', 'grpc://defaults:1', 10, 10)")
    meeting_id = sql_value("INSERT INTO meetings (display_name, meeting_code) VALUES ('Legacy', 'legacy-1') "
                           "RETURNING meeting_id")
    sql("INSERT INTO meeting_assignments (meeting_id, meeting_controller_id, region, assigned_by_gc_id) "
        "VALUES (%s, 'mc-plain', 'us-east-1', 'gc-legacy')", [meeting_id])


def _v1_snapshot() -> list[tuple]:
    return sql(f"SELECT {', '.join(V1_COLUMNS)} FROM meeting_controllers ORDER BY controller_id")


def _columns() -> set[str]:
    return {
        name for (name,) in sql("SELECT column_name FROM information_schema.columns "
                                "WHERE table_name = 'meeting_controllers'")
    }


def _default_health_for_a_new_row() -> str:
    extra = ("grpc_endpoint",) if "grpc_endpoint" in _columns() else ()
    columns = ("controller_id", "region", "endpoint", "max_meetings", "max_participants", *extra)
    values = ("mc-probe", "us-east-1", "grpc://probe:1", 1, 1, *["grpc://probe:1"] * len(extra))
    health = sql_value(
        f"INSERT INTO meeting_controllers ({', '.join(columns)}) VALUES ({', '.join(['%s'] * len(columns))}) "
        "RETURNING health_status",
        values,
    )
    sql("DELETE FROM meeting_controllers WHERE controller_id = 'mc-probe'")
    return health


def _assert_at_0001(snapshot: list[tuple]) -> None:
    assert _columns() == set(V1_COLUMNS)
    assert _v1_snapshot() == snapshot
    assert _default_health_for_a_new_row() == "healthy"
    assert violated_constraint(
        "UPDATE meeting_controllers SET health_status = 'pending' WHERE controller_id = 'mc-plain'"
    ) == "valid_health_status"


def _assert_at_latest(snapshot: list[tuple], migrated_after: datetime) -> None:
    assert _v1_snapshot() == snapshot, "a column of seed 002 changed"
    rows = sql("SELECT controller_id, endpoint, grpc_endpoint, webtransport_endpoint, updated_at "
               "FROM meeting_controllers")
    for controller_id, endpoint, grpc_endpoint, webtransport_endpoint, updated_at in rows:
        assert grpc_endpoint == endpoint[:255], controller_id
        assert webtransport_endpoint is None
        assert updated_at >= migrated_after, controller_id
    by_id = {row[0]: row for row in rows}
    assert by_id["mc-long"][1] == LONG_ENDPOINT  # the legacy column keeps the whole value
    assert by_id["mc-long"][2] == LONG_ENDPOINT[:255]
    assert by_id["mc-exact-255"][2] == "g" * 255
    assert _default_health_for_a_new_row() == "pending"
    # The trigger is back in place: a raw UPDATE bumps updated_at.
    before = sql_value("SELECT updated_at FROM meeting_controllers WHERE controller_id = 'mc-plain'")
    sql("UPDATE meeting_controllers SET current_meetings = current_meetings WHERE controller_id = 'mc-plain'")
    assert sql_value("SELECT updated_at FROM meeting_controllers WHERE controller_id = 'mc-plain'") > before


@pytest.mark.django_db(transaction=True)
def test_rows_written_under_the_first_controllers_migration_survive_the_history_forwards_and_back():
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    try:
        executor = _migrate(executor, [("controllers", "0001_initial")])
        _insert_legacy_rows()
        snapshot = _v1_snapshot()
        assert len(snapshot) == len(LEGACY_ROWS) + 1
        assert snapshot[[row[0] for row in snapshot].index("mc-defaults")][7] == "healthy"

        started = sql_value("SELECT clock_timestamp()")
        executor = _migrate(executor, leaves)
        _assert_at_latest(snapshot, started)

        executor = _migrate(executor, [("controllers", "0001_initial")])
        _assert_at_0001(snapshot)

        started = sql_value("SELECT clock_timestamp()")
        executor = _migrate(executor, leaves)
        _assert_at_latest(snapshot, started)
        assert sql_value("SELECT count(*) FROM meeting_assignments WHERE meeting_controller_id = 'mc-plain'") == 1
    finally:
        MigrationExecutor(connection).migrate(leaves)


def _member_indexes() -> dict[str, str]:
    rows = sql(
        "SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index "
        "WHERE indrelid IN ('meeting_controllers'::regclass, 'media_handlers'::regclass)"
    )
    return dict(rows)


@pytest.mark.django_db(transaction=True)
def test_the_member_tables_lose_their_id_pattern_indexes_and_get_them_back_on_rollback():
    # Every beat writes its row outside HOT, so each index of these tables costs an insert per beat: the
    # pattern index Django adds beside a CharField primary key serves no query here (0010).
    pattern = {
        "meeting_controllers_controller_id_bb18010b_like": "(controller_id varchar_pattern_ops)",
        "media_handlers_handler_id_ed63c37f_like": "(handler_id varchar_pattern_ops)",
    }
    assert not [index for index in _member_indexes() if index.endswith("_like")]
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    try:
        sql(
            "INSERT INTO meeting_controllers (controller_id, region, endpoint, grpc_endpoint, max_meetings, "
            "max_participants) VALUES ('mc-pattern', 'us-east-1', 'grpc://a:1', 'grpc://a:1', 1, 1)"
        )
        executor = _migrate(executor, [("controllers", "0009_members_updated_at_skip_when_now")])
        indexes = _member_indexes()
        for name, definition in pattern.items():
            assert indexes[name].endswith(definition)
        executor = _migrate(executor, leaves)
        assert not [index for index in _member_indexes() if index.endswith("_like")]
        assert sql_value("SELECT count(*) FROM meeting_controllers WHERE controller_id = 'mc-pattern'") == 1
        # The primary keys still serve lookups by id.
        assert {"meeting_controllers_pkey", "media_handlers_pkey"} <= set(_member_indexes())
    finally:
        MigrationExecutor(connection).migrate(leaves)
        sql("DELETE FROM meeting_controllers WHERE controller_id = 'mc-pattern'")
