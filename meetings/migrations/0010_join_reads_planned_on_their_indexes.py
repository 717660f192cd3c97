import importlib

from django.db import migrations

from darktower.migration import SafeMigration

# Every read of a join (meeting_join, meetings 0008, which states the join's rules) through its index, whatever
# statistics the planner has.
#
# PL/pgSQL keeps the plan of each statement for the session, made with the statistics of the moment: statistics
# taken while meeting_participants or meeting_bans was (nearly) empty (a new deployment, a set-up ANALYZE) priced a
# sequential scan as the cheapest read, and every later join then scanned the whole table until the next ANALYZE.
# Each read of the function has an index that names the meeting, the region or the primary key
# (idx_participants_present, uq_meeting_bans_meeting_principal, idx_meeting_controllers_available, ...), so the
# function plans its statements with sequential scans off: the planner then takes an index whatever it believes
# the table holds.
#
# A signed-in user's open participant is looked for among the meeting's present participants (a MATERIALIZED CTE on
# idx_participants_present, the user's condition outside): on the user's index, a plan made with such statistics
# read every participation the user ever had, in any meeting. The meeting's present participants are bounded by
# its seats (and its waiting room); a user's participations are not bounded at all.
#
# The same checks, in the same order, with the same outcomes; the same rows written.

_0009 = importlib.import_module("meetings.migrations.0009_join_candidates_planned_once")
JOIN_SIGNATURE = _0009.JOIN_SIGNATURE

_OPEN_PARTICIPANT = """
        SELECT * INTO p FROM meeting_participants mp
        WHERE mp.meeting_id = m.meeting_id AND mp.left_at IS NULL AND mp.user_id = p_user_id
        ORDER BY mp.joined_at, mp.id LIMIT 1;
"""
_OPEN_PARTICIPANT_AMONG_PRESENT = """
        WITH present AS MATERIALIZED (
            SELECT * FROM meeting_participants mp WHERE mp.meeting_id = m.meeting_id AND mp.left_at IS NULL
        )
        SELECT * INTO p FROM present pr WHERE pr.user_id = p_user_id ORDER BY pr.joined_at, pr.id LIMIT 1;
"""
_HEADER = "LANGUAGE plpgsql VOLATILE AS $$"
_HEADER_WITHOUT_SEQUENTIAL_SCANS = "LANGUAGE plpgsql VOLATILE SET enable_seqscan = off AS $$"


def _replaced_once(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"meeting_join (0009) no longer holds exactly one {old.strip()!r}"
    return text.replace(old, new)


# meeting_join as in 0009, with the two changes above.
JOIN_FUNCTION = _replaced_once(
    _replaced_once(_0009.JOIN_FUNCTION, _OPEN_PARTICIPANT, _OPEN_PARTICIPANT_AMONG_PRESENT),
    _HEADER, _HEADER_WITHOUT_SEQUENTIAL_SCANS,
)


class Migration(SafeMigration):

    dependencies = [
        ('meetings', '0009_join_candidates_planned_once'),
    ]

    operations = [
        # Back to 0009's function: CREATE OR REPLACE replaces its settings too.
        migrations.RunSQL(JOIN_FUNCTION, _0009.JOIN_FUNCTION),
    ]
