"""The join statement is bound on the server and prepared on its connection once it has run a few times, so that
PostgreSQL parses and plans it once per connection instead of on every join; a refusal still answers its domain
error, and the connection goes on serving joins after it, and after the function is replaced."""

from __future__ import annotations

import pytest
from django.db import connection

from darktower.errors import Gone, InvalidInput, NotFound
from meetings.services.participants import meeting_join
from tests.factories import make_meeting, make_user
from tests.meetings.test_join_function import (  # noqa: F401 -- controller: a fixture
    REGION,
    _ended,
    controller,
    placed_meeting,
    statements,
)

# psycopg prepares a statement the first time it runs after this many executions on the connection.
_WARM_UP = 6


def prepared_joins() -> list[str]:
    """The join statements prepared on this connection (protocol-level, by psycopg)."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT statement FROM pg_prepared_statements WHERE NOT from_sql AND statement LIKE %s",
            ["%meeting_join(%"],
        )
        return [statement for (statement,) in cursor.fetchall()]


def reloads(meeting, user, times: int) -> None:
    for _ in range(times):
        result = meeting_join(meeting_ref=meeting.meeting_code, region=REGION, user=user, ip_address="192.0.2.1",
                              user_agent="pytest", client_version="1.2.3")
        assert result.assignment.reused


@pytest.mark.django_db
@pytest.mark.usefixtures("controller")
def test_a_users_join_statement_is_prepared_once_per_connection_and_still_one_statement():
    meeting = placed_meeting()
    user = make_user()
    reloads(meeting, user, _WARM_UP)
    prepared = prepared_joins()
    assert len(prepared) == 1, prepared
    # Bound on the server: the values travel apart from the text.
    assert "$1" in prepared[0] and "users u CROSS JOIN LATERAL" in prepared[0]
    # By id or by code, with or without the optional values: the same statement.
    with statements() as seen:
        result = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user_id=user.pk)
    assert len(seen) == 1, seen
    assert not result.created
    assert prepared_joins() == prepared


@pytest.mark.django_db
@pytest.mark.usefixtures("controller")
def test_a_guests_join_statement_is_prepared_and_reads_back_the_same_rows():
    meeting = placed_meeting(allow_guests=True)
    for number in range(_WARM_UP):
        result = meeting_join(meeting_ref=meeting.meeting_code, region=REGION, display_name=f"Guest {number}",
                              ip_address=f"192.0.2.{number + 1}")
        assert result.created and result.assignment.reused
        assert result.participant.display_name == f"Guest {number}"
        assert str(result.participant.ip_address) == f"192.0.2.{number + 1}"
        assert result.participant.user_id is None and result.meeting.pk == meeting.pk
    # The host's join that placed the meeting prepared the users' form beside.
    guests = [statement for statement in prepared_joins() if "users u" not in statement]
    assert len(guests) == 1, guests


@pytest.mark.django_db
@pytest.mark.usefixtures("controller")
def test_a_refusal_through_the_prepared_statement_is_its_error_and_the_connection_goes_on():
    meeting = placed_meeting()
    user = make_user()
    reloads(meeting, user, _WARM_UP)
    ended = placed_meeting()
    _ended(ended)
    with pytest.raises(Gone):
        meeting_join(meeting_ref=ended.meeting_code, region=REGION, user=user)
    with pytest.raises(NotFound):
        meeting_join(meeting_ref="no-such-meeting", region=REGION, user=user)
    with pytest.raises(InvalidInput):
        meeting_join(meeting_ref=make_meeting(host=user).meeting_code, region="nowhere-1", user=user)
    reloads(meeting, user, _WARM_UP)
    assert len(prepared_joins()) == 1


@pytest.mark.django_db
@pytest.mark.usefixtures("controller")
def test_the_prepared_statement_survives_the_function_being_replaced():
    meeting = placed_meeting()
    user = make_user()
    reloads(meeting, user, _WARM_UP)
    assert len(prepared_joins()) == 1
    # What a migration's CREATE OR REPLACE of the function does (same arguments, same result): PostgreSQL plans
    # the prepared statement again.
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_get_functiondef('meeting_join'::regproc)")
        (definition,) = cursor.fetchone()
        cursor.execute(definition)
    reloads(meeting, user, 2)
    assert len(prepared_joins()) == 1
