"""Migration 0004 (guests, waiting room, bans): the database enforces its rules, and it rolls back with rows
written under it (a denied participant, a ban) and forward again."""

from __future__ import annotations

import uuid

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.factories import make_meeting, make_user
from tests.fixtures.sql import sql, sql_value, violated_constraint


@pytest.mark.django_db
def test_the_database_refuses_what_the_rules_forbid():
    meeting = make_meeting(host=make_user())
    assert violated_constraint("UPDATE meetings SET max_guests = -1 WHERE meeting_id = %s", [meeting.pk]) == (
        "meetings_max_guests_nonnegative"
    )
    insert = ("INSERT INTO meeting_participants (meeting_id, participant_id, display_name, status) "
              "VALUES (%s, %s, 'x', %s)")
    assert violated_constraint(insert, [meeting.pk, uuid.uuid4(), "lurking"]) == "meeting_participants_status_valid"
    ban = "INSERT INTO meeting_bans (meeting_id, principal, participant_id, display_name) VALUES (%s, %s, %s, 'x')"
    sql(ban, [meeting.pk, "guest:192.0.2.1", uuid.uuid4()])
    assert violated_constraint(ban, [meeting.pk, "guest:192.0.2.1", uuid.uuid4()]) == (
        "uq_meeting_bans_meeting_principal"
    )
    # Defaults for rows written without the new columns (older code during a rolling deploy).
    assert sql_value("SELECT max_guests FROM meetings WHERE meeting_id = %s", [meeting.pk]) == 10
    sql("INSERT INTO meeting_participants (meeting_id, participant_id, display_name) VALUES (%s, %s, 'y')",
        [meeting.pk, uuid.uuid4()])
    assert sql_value("SELECT status FROM meeting_participants WHERE display_name = 'y'") == "admitted"


@pytest.mark.django_db(transaction=True)
def test_rolls_back_to_0003_with_denied_participants_and_bans_and_forward_again():
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    meeting = make_meeting(host=make_user())
    sql("INSERT INTO meeting_participants (meeting_id, participant_id, display_name, status, left_at, leave_reason) "
        "VALUES (%s, %s, 'denied one', 'waiting', now(), 'denied')", [meeting.pk, uuid.uuid4()])
    sql("INSERT INTO meeting_bans (meeting_id, principal, participant_id, display_name) VALUES (%s, %s, %s, 'x')",
        [meeting.pk, "guest:192.0.2.1", uuid.uuid4()])
    try:
        MigrationExecutor(connection).migrate([("meetings", "0003_column_comments")])
        assert sql_value("SELECT leave_reason FROM meeting_participants WHERE display_name = 'denied one'") == (
            "voluntary"
        )
        assert sql_value("SELECT to_regclass('meeting_bans')") is None
    finally:
        MigrationExecutor(connection).migrate(leaves)
    assert sql_value("SELECT status FROM meeting_participants WHERE display_name = 'denied one'") == "admitted"
