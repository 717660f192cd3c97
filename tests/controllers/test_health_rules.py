"""The health state machine's tables (controllers.health_rules) against the SQL that applies them, cell by cell on
real rows: the beat's CASE, re-registration's UPSERT, the beat's hold-down and drain items, and the bookkeeping
trigger of a landed migration (which cannot change: the table must describe it)."""

from __future__ import annotations

import pytest
from django.db import connection

from controllers.health_rules import (
    BEAT_TRANSITIONS,
    OPERATOR_DRAIN_KEPT,
    REPORTED_STATES,
    REREGISTRATION_TRANSITIONS,
    bookkeeping_after_change,
    health_after_sql,
)
from controllers.members import CONTROLLERS, HANDLERS, MemberKind
from controllers.models import HealthStatus, TransitionReason
from controllers.services.registration import controller_register, handler_register
from controllers.services.transitions import health_transition
from tests.factories import make_controller, make_handler

pytestmark = pytest.mark.django_db

STATES = list(HealthStatus)
KINDS = pytest.mark.parametrize("kind", [CONTROLLERS, HANDLERS], ids=["controllers", "handlers"])


def _make(kind: MemberKind, member_id: str, state: str):
    if kind is CONTROLLERS:
        return make_controller(controller_id=member_id, health=state)
    return make_handler(handler_id=member_id, health=state)


def test_the_tables_cover_every_state():
    assert set(BEAT_TRANSITIONS) == set(HealthStatus)
    assert all(set(row) == set(REPORTED_STATES) for row in BEAT_TRANSITIONS.values())
    assert set(REREGISTRATION_TRANSITIONS) == set(HealthStatus)


@KINDS
def test_the_beat_case_is_the_table_in_every_cell(kind):
    for current in STATES:
        _make(kind, f"m-{current}", current)
    case = health_after_sql("t.health_status", "%(reported)s")
    for current in STATES:
        for reported in REPORTED_STATES:
            with connection.cursor() as cursor:
                cursor.execute(
                    f"SELECT {case} FROM {kind.table} t WHERE {kind.pk} = %(id)s",
                    {"id": f"m-{current}", "reported": str(reported)},
                )
                assert cursor.fetchone()[0] == BEAT_TRANSITIONS[current][reported], (current, reported)


def _register(kind: MemberKind, member_id: str) -> str:
    if kind is CONTROLLERS:
        registration = controller_register(
            controller_id=member_id, region="us-east-1", grpc_endpoint="grpc://mc.internal:50052",
            webtransport_endpoint=None, max_meetings=10, max_participants=100,
        )
    else:
        registration = handler_register(
            handler_id=member_id, region="us-east-1", grpc_endpoint="grpc://mh.internal:50053",
            webtransport_endpoint="https://mh.internal:4433", max_streams=10,
        )
    return registration.health_status


@KINDS
@pytest.mark.parametrize("current", STATES)
def test_reregistration_follows_the_table(kind, current):
    _make(kind, "m-1", current)
    assert _register(kind, "m-1") == REREGISTRATION_TRANSITIONS[current]


@pytest.mark.parametrize(
    ("reason", "expected"),
    [(TransitionReason.OPERATOR, OPERATOR_DRAIN_KEPT), (TransitionReason.HEARTBEAT, "pending")],
)
def test_a_controller_an_operator_drained_stays_draining_on_reregistration(reason, expected):
    _make(CONTROLLERS, "mc-1", HealthStatus.HEALTHY)
    health_transition(kind=CONTROLLERS, ids=["mc-1"], from_states=[HealthStatus.HEALTHY],
                      to_status=HealthStatus.DRAINING, reason=reason)
    assert _register(CONTROLLERS, "mc-1") == expected


def test_a_handler_never_keeps_a_drain_on_reregistration():
    _make(HANDLERS, "mh-1", HealthStatus.HEALTHY)
    health_transition(kind=HANDLERS, ids=["mh-1"], from_states=[HealthStatus.HEALTHY],
                      to_status=HealthStatus.DRAINING, reason=TransitionReason.OPERATOR)
    assert _register(HANDLERS, "mh-1") == REREGISTRATION_TRANSITIONS[HealthStatus.DRAINING]


_BOOKKEEPING_SQL = """
SELECT health_changed_at = now(), good_heartbeats, coalesce(unhealthy_since = now(), false),
       unhealthy_since IS NULL{drain}
FROM {table} WHERE {pk} = %(id)s
"""


@KINDS
@pytest.mark.parametrize("before", STATES)
@pytest.mark.parametrize("after", STATES)
def test_the_bookkeeping_trigger_does_what_the_table_says(kind, before, after):
    member = _make(kind, "m-1", before)
    drain = kind is CONTROLLERS
    # The drain columns may be set only while draining, unhealthy_since only while unhealthy (CHECK constraints).
    drained = drain and before == HealthStatus.DRAINING
    was_unhealthy = before == HealthStatus.UNHEALTHY
    target = make_controller(controller_id="mc-target").pk if drained else None
    with connection.cursor() as cursor:
        # Every bookkeeping column set to a value the trigger would not write, then the state change alone.
        cursor.execute(
            f"UPDATE {kind.table} SET good_heartbeats = 5, health_changed_at = now() - interval '1 hour'"
            + (", unhealthy_since = now() - interval '1 hour'" if was_unhealthy else "")
            + (", drain_deadline = now() + interval '1 hour', drain_target_controller_id = %(target)s"
               if drained else "")
            + f" WHERE {kind.pk} = %(id)s",
            {"id": member.pk, "target": target},
        )
        cursor.execute(f"UPDATE {kind.table} SET health_status = %(after)s WHERE {kind.pk} = %(id)s",
                       {"id": member.pk, "after": str(after)})
        cursor.execute(_BOOKKEEPING_SQL.format(
            table=kind.table, pk=kind.pk,
            drain=", drain_deadline IS NULL, drain_target_controller_id IS NULL" if drain else "",
        ), {"id": member.pk})
        row = cursor.fetchone()
    stamped, good_heartbeats, unhealthy_now, unhealthy_cleared = row[:4]
    if before == after:
        # The trigger fires on a change only: a beat that keeps the state keeps every column.
        assert (stamped, good_heartbeats, unhealthy_now, unhealthy_cleared) == (False, 5, False, not was_unhealthy)
        if drain:
            assert row[4:] == (not drained, not drained)
        return
    expected = bookkeeping_after_change(after)
    assert stamped is (expected["health_changed_at"] == "now")
    assert good_heartbeats == int(expected["good_heartbeats"])
    assert unhealthy_now is (expected["unhealthy_since"] == "now")
    assert unhealthy_cleared is (expected["unhealthy_since"] is None)
    if drained:
        assert row[4:] == (expected["drain_deadline"] is None, expected["drain_target_controller_id"] is None)
    elif drain:
        assert row[4:] == (True, True)
