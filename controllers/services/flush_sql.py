"""The beat flush statement: one statement writes a batch of beats (MC heartbeats or MH load reports) of one member
kind, records the transitions it causes and returns only what its caller must hear of.

    WITH batch    the beats, parsed once from one JSON document           (batch_cte)
         steady   compare-and-set of the steady beats                     (steady_cte)
         snapshot every other beat's row, locked                          (transitions.changed_cte_sql:
         changed  its new state (health_rules.BEAT_TRANSITIONS) and beat columns   snapshot, changed,
         recorded the transitions of the rows whose state moved                     recorded)
    SELECT        the outcomes and the missing members                    (outcomes_select)
    [UNION ALL    controllers: the capacity documents of the steady rows  (capacity_documents_select)]

Its rules, stated once here:
- A beat is `steady` when its caller knows the member's state and the beat can neither move it nor feed the
  recovery gate (health_rules.beat_is_steady). `steady` writes it by compare-and-set on the known state without
  locking the row first: that is every beat of a steady fleet's flush, and it spares a second probe of the
  primary key and the lock's work per row. A steady beat whose row is no longer in the known state (a change
  committed while the compare-and-set waited for the row fails it) goes through `snapshot` / `changed` like every
  other beat: the row locked first, its new state computed from the state it is in, and recorded.
- A beat is written only while its sender owns the member (`OWNED`). One that another credential now owns (an
  operator moved the member since the caller last loaded it) is left out like a member without a row: the caller
  drops what it knew of the member, and the sender's next beat loads the owner and is refused.
- Rows are locked in key order within each part (the compare-and-set follows the primary key index, the snapshot
  joins the batch in the order given: callers sort it by id), so two flushes of the same members cannot deadlock
  unless a member is steady in one and not in the other; PostgreSQL then ends one of them, whose caller keeps its
  beats for the next flush (controllers.heartbeats.HeartbeatRecorder). The stale sweep skips locked rows.
- A row comes back when it moved, waits for the recovery gate, or is not in the state its beat's `known` says (null
  `known`: every row comes back); a beat whose member has no row (or is owned by another) comes back with null
  states. A steady fleet's flush returns no row: building rows in Python only to learn that nothing changed would
  cost CPU under the GIL the event loop serving beats waits for.
- Controllers: the capacity hashes of the rows written by compare-and-set (their state does not change later in
  the transaction) come back as documents of at most %(capacity_batch)s controllers for the cache's script, in rows
  with a null id, so the cache needs no read after the commit.

Parameters: beats (the JSON document: per beat id, reported, known, steady, age, client_id and the kind's beat
columns), component_type, actor_type, actor_user_id, drain_deadline, capacity_batch. Every fragment is built from
constants of this package (MemberKind, HealthStatus), never from input.
"""

from __future__ import annotations

from controllers.capacity_cache import capacity_values_sql
from controllers.health_rules import (
    RECOVERING_STATES,
    beat_drain_deadline_sql,
    beat_hold_down_sql,
    health_after_sql,
)
from controllers.members import CONTROLLERS, MEMBER_KINDS, MemberKind
from controllers.models import TransitionReason
from controllers.services.transitions import changed_cte_sql

# The beat is written only while its sender owns the member (None: the GC's own code, which needs no owner).
OWNED = "(b.client_id IS NULL OR t.owner_client_id = b.client_id)"


def batch_cte(kind: MemberKind) -> str:
    """`batch`: the beats, parsed once. The batch is one JSON document (made by orjson, in C): psycopg dumps a
    Python list for an array parameter element by element in Python, several times the CPU, all of it holding the
    GIL. MATERIALIZED: the later parts read it several times. age: seconds since the beat was received, on the
    caller's clock (the in-flight accounting subtracts it from now())."""
    record = ", ".join(f"{column} {pg_type}" for column, pg_type in kind.beat_columns)
    return (
        "batch AS MATERIALIZED (SELECT * FROM jsonb_to_recordset(%(beats)s::jsonb) AS b(id text, "  # noqa: S608
        f"reported text, known text, steady boolean, age double precision, client_id text, {record}))"
    )


def beat_set_sql(kind: MemberKind, *, beat: str, from_status: str) -> str:
    """The SET list of a beat's write, after health_status: `beat` is the alias of the beat's record, and
    `from_status` the expression of the member's state before it."""
    columns = [column for column, _ in kind.beat_columns]
    assignments = "".join(f", {column} = coalesce({beat}.{column}, t.{column})" for column in columns)
    # Stamping updated_at here spares the row trigger its function call (accounts.models.updated_at_trigger).
    assignments += ", last_heartbeat_at = now(), updated_at = now()"
    assignments += beat_hold_down_sql(beat=beat, from_status=from_status)
    if kind is CONTROLLERS:
        # In-flight accounting: a heartbeat that reports current_meetings already counts what was assigned before
        # it was received; what was assigned after (while the beat waited for its flush) stays in flight. A beat
        # without counts reconciles nothing. The count runs only for an MC with something in flight
        # (idx_assignments_active_by_mc), so a steady fleet's flush does no extra reads.
        assignments += (
            f", assigned_since_heartbeat = CASE WHEN {beat}.current_meetings IS NULL "  # noqa: S608 (constants only)
            "OR t.assigned_since_heartbeat = 0 THEN t.assigned_since_heartbeat ELSE least(t.assigned_since_heartbeat, "
            "(SELECT count(*) FROM meeting_assignments a WHERE a.meeting_controller_id = t.controller_id "
            f"AND a.ended_at IS NULL AND a.assigned_at > now() - make_interval(secs => {beat}.age))) END"
        )
        assignments += beat_drain_deadline_sql(beat=beat, from_status=from_status)
    return assignments


def steady_cte(kind: MemberKind) -> str:
    """`steady`: the compare-and-set of the steady beats (see the module docstring); returns their ids (and, for
    controllers, their capacity hash values)."""
    pk = kind.pk
    returning = f", {capacity_values_sql('t')} AS hash_values" if kind is CONTROLLERS else ""
    return (
        f"steady AS (UPDATE {kind.table} t SET health_status = t.health_status"  # noqa: S608 (constants only)
        f"{beat_set_sql(kind, beat='b', from_status='t.health_status')} FROM batch b "
        f"WHERE t.{pk} = b.id AND t.{pk} = ANY(ARRAY(SELECT b.id FROM batch b WHERE b.steady)) "
        f"AND b.steady AND t.health_status = b.known AND {OWNED} RETURNING t.{pk} AS id{returning})"
    )


def changed_ctes(kind: MemberKind) -> str:
    """`snapshot`, `changed`, `recorded`: every beat `steady` did not write, on its locked row."""
    pk = kind.pk
    columns = [column for column, _ in kind.beat_columns]
    return changed_cte_sql(
        kind,
        # ANY repeats the join on purpose: given only `= b.id`, the planner hashes the whole table for the
        # snapshot and again for the UPDATE (two sequential scans per flush); the ANY lets it probe the primary
        # key for the batch's rows, and the UPDATE then follows by key too.
        where=f"t.{pk} = b.id AND t.{pk} = ANY(ARRAY("  # noqa: S608 (constants only)
        f"SELECT b.id FROM batch b WHERE NOT EXISTS (SELECT FROM steady w WHERE w.id = b.id))) AND {OWNED}",
        snapshot_from=", batch b",
        snapshot_columns=", b.reported, b.known, b.age" + "".join(f", b.{column}" for column in columns),
        set_status=health_after_sql("s.from_status", "s.reported"),
        extra_set=beat_set_sql(kind, beat="s", from_status="s.from_status"),
        returning=", s.reported, s.known",
        reason=f"'{TransitionReason.HEARTBEAT}'",
        metadata="jsonb_build_object('reported', c.reported)",
    )


def outcomes_select() -> str:
    """The rows of `changed` the caller must hear of, then the beats neither part wrote (no row, or not owned).
    Columns: id, region, from_status, to_status, capacity document (null here)."""
    recovering = ", ".join(f"'{state}'" for state in RECOVERING_STATES)
    return (
        "SELECT id, region, from_status, to_status, NULL::text FROM changed "  # noqa: S608 (constants only)
        f"WHERE known IS DISTINCT FROM to_status OR from_status <> to_status OR to_status IN ({recovering}) "
        "UNION ALL SELECT b.id, NULL, NULL, NULL, NULL FROM batch b WHERE NOT EXISTS (SELECT FROM changed c "
        "WHERE c.id = b.id) AND NOT EXISTS (SELECT FROM steady w WHERE w.id = b.id)"
    )


def capacity_documents_select(kind: MemberKind) -> str:
    """Controllers: the capacity hashes of the steady rows, in rows with a null id and one JSON document each."""
    if kind is not CONTROLLERS:
        return ""
    return (
        " UNION ALL SELECT NULL, NULL, NULL, NULL, json_agg(json_build_array(w.id, w.hash_values))::text "
        "FROM (SELECT id, hash_values, (row_number() OVER () - 1) / %(capacity_batch)s AS chunk FROM steady) w "
        "GROUP BY w.chunk"
    )


def beats_statement(kind: MemberKind) -> str:
    """The whole statement for one member kind (see the module docstring)."""
    return (
        f"WITH {batch_cte(kind)}, {steady_cte(kind)}, {changed_ctes(kind)} "
        f"{outcomes_select()}{capacity_documents_select(kind)}"
    )


BEATS_STATEMENTS = {kind.table: beats_statement(kind) for kind in MEMBER_KINDS}
