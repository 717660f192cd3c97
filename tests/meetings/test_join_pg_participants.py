"""The participant reads of a join (the meeting_join statement: the user's open participant, the present seats, the
ban check) read one meeting's rows through an index whatever statistics the planner has, with a plan made knowing
the meeting (custom) or not (generic, which PL/pgSQL keeps for the session): statistics taken while
meeting_participants was (nearly) empty (a new deployment, a bench's set-up ANALYZE) must not make every later join
scan the whole table until the next ANALYZE.

The function's own statements are watched through the transaction's statistics counters (pg_stat_xact_user_tables):
a sequential scan of either table, or an index walk that fetches other meetings' rows, shows there."""

from __future__ import annotations

import pytest
from django.db import connection

from meetings.services.participants import meeting_join
from tests.factories import make_controller, make_meeting, make_user

REGION = "us-east-1"
CROWD_MEETINGS = 500
PER_MEETING = 100  # 50,000 participant rows, half of them present
# What one join may fetch from meeting_participants through its indexes: the joined meeting's own few rows.
FETCH_BOUND = 20


def _counters(table: str) -> tuple[int, int]:
    """This transaction's sequential scans of `table` and the rows its index scans fetched."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT coalesce(seq_scan, 0), coalesce(idx_tup_fetch, 0) FROM pg_stat_xact_user_tables "
            "WHERE relname = %s",
            [table],
        )
        row = cursor.fetchone()
    return (row[0], row[1]) if row else (0, 0)


def _statistics(owner, *, statistics: str) -> None:
    """meeting_participants' and meeting_bans' statistics taken on empty tables, or on one meeting's few rows (the
    planner then takes every row for that meeting's, and every participant for present)."""
    with connection.cursor() as cursor:
        if statistics == "one meeting":
            early = make_meeting(host=owner)
            cursor.execute(
                "INSERT INTO meeting_participants (meeting_id, participant_id, display_name, role, status) "
                "SELECT %s, gen_random_uuid(), 'Early ' || i, 'guest', 'admitted' FROM generate_series(1, 3) i",
                [early.pk],
            )
            cursor.execute(
                "INSERT INTO meeting_bans (meeting_id, principal, participant_id, display_name) "
                "VALUES (%s, 'guest:early', gen_random_uuid(), 'Early')",
                [early.pk],
            )
        cursor.execute("ANALYZE meeting_participants")
        cursor.execute("ANALYZE meeting_bans")


def _crowd(owner) -> None:
    """CROWD_MEETINGS meetings of PER_MEETING participants each (every other one present), all of them `owner`'s
    (a user who joined a lot: their participations are no bound on a join's read), and a ban in each; no ANALYZE
    after them."""
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO meetings (display_name, meeting_code, created_by_user_id) "
            "SELECT 'Crowd ' || i, 'crowd-' || lpad(i::text, 6, '0'), %s FROM generate_series(1, %s) i",
            [owner.pk, CROWD_MEETINGS],
        )
        cursor.execute(
            "INSERT INTO meeting_participants (meeting_id, participant_id, user_id, display_name, role, status, "
            "left_at) "
            "SELECT m.meeting_id, gen_random_uuid(), %s, 'Crowd ' || i, 'participant', 'admitted', "
            "CASE WHEN i %% 2 = 0 THEN now() END "
            "FROM meetings m, generate_series(1, %s) i WHERE m.meeting_code LIKE 'crowd-%%'",
            [owner.pk, PER_MEETING],
        )
        cursor.execute(
            "INSERT INTO meeting_bans (meeting_id, principal, participant_id, display_name) "
            "SELECT m.meeting_id, 'guest:' || m.meeting_code, gen_random_uuid(), 'Banned' "
            "FROM meetings m WHERE m.meeting_code LIKE 'crowd-%%'"
        )


def _assert_joins_read_one_meetings_rows(owner) -> None:
    """The host (the seat count), a user (the open participant, the ban check, the seats), the same user again (a
    reload) and a guest (the guest seats) join a new meeting, each a join of its own, and none scans either table
    or fetches another meeting's participants."""
    meeting = make_meeting(host=owner, allow_guests=True, require_auth=False)
    user = make_user()
    scans_before, fetched_before = _counters("meeting_participants")
    bans_before, _ = _counters("meeting_bans")

    joins = [
        meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=owner),
        meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user),
        meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=user),
        meeting_join(meeting_ref=str(meeting.pk), region=REGION, display_name="Guest"),
    ]

    assert [join.created for join in joins] == [True, True, False, True]
    scans, fetched = _counters("meeting_participants")
    bans, _ = _counters("meeting_bans")
    assert scans - scans_before == 0, "a join scanned the whole of meeting_participants"
    assert bans - bans_before == 0, "a join scanned the whole of meeting_bans"
    assert fetched - fetched_before <= FETCH_BOUND, "a join fetched other meetings' participants"


@pytest.mark.django_db
@pytest.mark.parametrize("statistics", ["empty", "one meeting"])
@pytest.mark.parametrize("mode", ["force_custom_plan", "force_generic_plan"])
def test_the_participant_reads_of_a_join_read_one_meetings_rows_through_an_index(statistics, mode):
    owner = make_user()
    make_controller(region=REGION, controller_id="mc-us-east-1-a")
    _statistics(owner, statistics=statistics)
    _crowd(owner)
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('plan_cache_mode', %s, true)", [mode])

    _assert_joins_read_one_meetings_rows(owner)


@pytest.mark.django_db
def test_the_plans_a_session_made_while_the_tables_were_small_still_read_one_meetings_rows():
    # A server's first joins plan the function's statements on tables that hold a few rows; PL/pgSQL keeps those
    # plans for the session (the plan cache settles on its generic plan after five custom ones) while the tables
    # grow, until the next ANALYZE.
    owner = make_user()
    make_controller(region=REGION, controller_id="mc-us-east-1-a")
    _statistics(owner, statistics="empty")
    early = make_meeting(host=owner, allow_guests=True, require_auth=False)
    for _ in range(8):
        meeting_join(meeting_ref=str(early.pk), region=REGION, user=make_user())
        meeting_join(meeting_ref=str(early.pk), region=REGION, display_name="Guest")
    _crowd(owner)

    _assert_joins_read_one_meetings_rows(owner)
