"""CHECK and partial unique constraints hold at the database level: raw SQL, no model validation involved."""

from __future__ import annotations

import pytest

from audit.models import ActorType, AuditResult, IdempotencyKey
from controllers.models import HealthStatus
from meetings.models import LeaveReason, MeetingStatus, RecordingStatus
from tests.factories import make_controller, make_handler, make_meeting, make_user
from tests.fixtures.sql import sql, violated_constraint


@pytest.fixture
def rows(db):
    """One valid row per table; each case breaks one column of one of them with a raw UPDATE."""
    user = make_user()
    meeting = make_meeting(host=user)
    controller = make_controller(controller_id="mc-constraints")
    handler = make_handler(handler_id="mh-constraints")
    sql("INSERT INTO meeting_participants (meeting_id, participant_id, display_name) "
        "VALUES (%s, gen_random_uuid(), 'P')", [meeting.meeting_id])
    sql("INSERT INTO recordings (meeting_id, started_at, storage_path, storage_bucket) "
        "VALUES (%s, now(), 'p', 'b')", [meeting.meeting_id])
    sql("INSERT INTO meeting_assignments (meeting_id, meeting_controller_id, region, assigned_by_gc_id) "
        "VALUES (%s, %s, 'us-east-1', 'gc-1')", [meeting.meeting_id, controller.controller_id])
    sql("INSERT INTO audit_logs (event_type, actor_type, action, result) VALUES ('e', 'system', 'a', 'success')")
    sql("INSERT INTO idempotency_keys (key, principal, request_method, request_path, request_hash, state, "
        "response_status, created_at, expires_at) "
        "VALUES ('k', 'ip:127.0.0.1', 'POST', '/x', 'h', 'in_progress', 201, now(), now())")
    sql("INSERT INTO signing_keys (kid, algorithm, public_key, private_key_encrypted, is_active, created_at) "
        "VALUES ('kid-1', 'EdDSA', '\\x00', '\\x00', true, now())")
    sql("INSERT INTO outbox_events (aggregate_type, aggregate_id, event_type) VALUES ('meeting', '1', 'e')")
    return {"meeting": meeting, "controller": controller, "handler": handler}


# (table, SET clause, constraint it must break)
BAD_VALUES = [
    ("meetings", "status = 'paused'", "meetings_status_valid"),
    ("meetings", "status = 'ACTIVE'", "meetings_status_valid"),
    ("meetings", "status = ''", "meetings_status_valid"),
    ("meetings", "status = 'ended', ended_at = NULL", "meetings_ended_has_ended_at"),
    ("meetings", "max_participants = 0", "meetings_max_participants_positive"),
    ("meeting_participants", "leave_reason = 'timeout'", "meeting_participants_leave_reason_valid"),
    ("meeting_participants", "leave_reason = 'Voluntary'", "meeting_participants_leave_reason_valid"),
    ("meeting_participants", "role = 'admin'", "meeting_participants_role_valid"),
    ("meeting_participants", "total_duration_seconds = -1", "meeting_participants_duration_nonnegative"),
    ("recordings", "status = 'done'", "recordings_status_valid"),
    ("recordings", "file_size_bytes = -1", "recordings_file_size_nonnegative"),
    ("recordings", "duration_seconds = -1", "recordings_duration_nonnegative"),
    ("meeting_controllers", "health_status = 'foo'", "valid_health_status"),
    ("meeting_controllers", "health_status = 'HEALTHY'", "valid_health_status"),
    ("meeting_controllers", "cpu_usage_percent = 100.01", "meeting_controllers_cpu_usage_percent_range"),
    ("meeting_controllers", "cpu_usage_percent = -0.01", "meeting_controllers_cpu_usage_percent_range"),
    ("meeting_controllers", "cpu_usage_percent = 'NaN'", "meeting_controllers_cpu_usage_percent_range"),
    ("meeting_controllers", "memory_usage_percent = 'Infinity'", "meeting_controllers_memory_usage_percent_range"),
    ("media_handlers", "health_status = 'foo'", "media_handlers_health_status_valid"),
    ("media_handlers", "health_status = 'Draining'", "media_handlers_health_status_valid"),
    ("media_handlers", "cpu_usage_percent = 101", "media_handlers_cpu_usage_percent_range"),
    ("media_handlers", "memory_usage_percent = -1", "media_handlers_memory_usage_percent_range"),
    ("media_handlers", "bandwidth_usage_percent = 'NaN'", "media_handlers_bandwidth_usage_percent_range"),
    ("meeting_assignments", "ended_at = assigned_at - interval '1 second'", "meeting_assignments_ended_after_assigned"),
    ("idempotency_keys", "state = 'done'", "idempotency_keys_state_valid"),
    ("idempotency_keys", "state = 'completed', response_status = NULL", "idempotency_keys_completed_has_response"),
    ("signing_keys", "algorithm = 'RS256'", "signing_keys_algorithm_eddsa"),
    ("signing_keys", "algorithm = 'none'", "signing_keys_algorithm_eddsa"),
    ("outbox_events", "attempts = -1", "outbox_events_attempts_nonnegative"),
]


@pytest.mark.parametrize(("table", "assignment", "constraint"), BAD_VALUES)
def test_a_bad_value_is_rejected_by_the_database(rows, table, assignment, constraint):
    assert violated_constraint(f"UPDATE {table} SET {assignment}") == constraint


@pytest.mark.parametrize(
    ("table", "column", "values"),
    [
        ("meetings", "status", [s for s in MeetingStatus.values if s != "ended"]),
        ("meeting_participants", "leave_reason", [*LeaveReason.values, None]),
        ("recordings", "status", RecordingStatus.values),
        ("meeting_controllers", "health_status", HealthStatus.values),
        ("media_handlers", "health_status", HealthStatus.values),
        ("idempotency_keys", "state", IdempotencyKey.State.values),
        ("meeting_controllers", "cpu_usage_percent", [0, 100, 42.5, None]),
        ("media_handlers", "bandwidth_usage_percent", [0, 100, None]),
    ],
)
def test_every_value_the_code_may_write_is_accepted(rows, table, column, values):
    for value in values:
        sql(f"UPDATE {table} SET {column} = %s", [value])

    assert [value for (value,) in sql(f"SELECT DISTINCT {column} FROM {table}")] == [values[-1]]


# audit_logs refuses every UPDATE (audit migration 0006): its CHECKs are tested on INSERT.
_AUDIT_INSERT = (
    "INSERT INTO audit_logs (event_type, actor_type, action, result) "
    "VALUES ('constraint-probe', %(actor_type)s, 'a', %(result)s)"
)


@pytest.mark.parametrize(("column", "value", "constraint"), [
    ("result", "ok", "audit_logs_result_valid"),
    ("actor_type", "robot", "audit_logs_actor_type_valid"),
])
def test_a_bad_audit_value_is_rejected_by_the_database(db, column, value, constraint):
    row = {"actor_type": "system", "result": "success", column: value}
    assert violated_constraint(_AUDIT_INSERT, row) == constraint


@pytest.mark.parametrize(("column", "values"), [("result", AuditResult.values), ("actor_type", ActorType.values)])
def test_every_audit_value_the_code_may_write_is_accepted(db, column, values):
    for value in values:
        sql(_AUDIT_INSERT, {"actor_type": "system", "result": "success", column: value})

    written = sql(f"SELECT DISTINCT {column} FROM audit_logs WHERE event_type = 'constraint-probe'")
    assert {value for (value,) in written} == set(values)


def test_an_ended_meeting_with_ended_at_is_accepted(rows):
    sql("UPDATE meetings SET status = 'ended', ended_at = now()")

    assert sql("SELECT status FROM meetings") == [("ended",)]


def test_one_active_assignment_per_meeting_and_region(rows):
    meeting_id, controller_id = rows["meeting"].meeting_id, rows["controller"].controller_id
    insert = (
        "INSERT INTO meeting_assignments (meeting_id, meeting_controller_id, region, assigned_by_gc_id, ended_at) "
        "VALUES (%s, %s, %s, 'gc-2', %s)"
    )

    second_active = [meeting_id, controller_id, "us-east-1", None]
    assert violated_constraint(insert, second_active) == "uq_meeting_assignments_active"
    # Ended assignments and other regions do not count.
    sql(insert, [meeting_id, controller_id, "eu-west-1", None])
    # clock_timestamp(), not now(): assigned_at defaults to statement_timestamp(), later than now() in a transaction.
    sql("UPDATE meeting_assignments SET ended_at = clock_timestamp() WHERE region = 'us-east-1'")
    sql(insert, [meeting_id, controller_id, "us-east-1", None])
    sql(insert.replace("%s)", "clock_timestamp())"), [meeting_id, controller_id, "us-east-1"])
    assert sql("SELECT region, count(*) FILTER (WHERE ended_at IS NULL), count(*) FROM meeting_assignments "
               "GROUP BY region ORDER BY region") == [("eu-west-1", 1, 1), ("us-east-1", 1, 3)]


def test_one_active_signing_key(rows):
    insert = (
        "INSERT INTO signing_keys (kid, algorithm, public_key, private_key_encrypted, is_active, created_at) "
        "VALUES (%s, 'EdDSA', '\\x00', '\\x00', %s, now())"
    )

    assert violated_constraint(insert, ["kid-2", True]) == "uq_signing_keys_one_active"
    sql(insert, ["kid-2", False])
    sql(insert, ["kid-3", False])
    assert violated_constraint("UPDATE signing_keys SET is_active = true WHERE kid = 'kid-3'") == (
        "uq_signing_keys_one_active"
    )
    assert sql("SELECT kid FROM signing_keys WHERE is_active") == [("kid-1",)]
