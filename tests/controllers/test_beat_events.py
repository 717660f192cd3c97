"""A beat that changes a member's health announces it: one outbox event per changed member, named like its audit
row, written in the transaction of its transition, and one INSERT for all the events of a batch."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection

from audit.models import AuditLog, OutboxEvent
from controllers.members import CONTROLLERS, HANDLERS, MemberKind
from controllers.models import HealthStatus, HealthTransition, MediaHandler, MeetingController
from controllers.services.beats import Beat, beats_record
from tests.factories import make_controller, make_handler

MODELS = {CONTROLLERS: MeetingController, HANDLERS: MediaHandler}


def make_member(kind: MemberKind, member_id: str, health: str) -> None:
    if kind is CONTROLLERS:
        make_controller(controller_id=member_id, health=health)
    else:
        make_handler(handler_id=member_id, health=health)


def beat(member_id: str, reported: str) -> Beat:
    return Beat(member_id, reported, {})


def events(member_id: str) -> list[dict[str, Any]]:
    return list(
        OutboxEvent.objects.filter(aggregate_id=member_id).order_by("id")
        .values("aggregate_type", "aggregate_id", "event_type", "payload")
    )


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [CONTROLLERS, HANDLERS], ids=["mc", "mh"])
def test_a_first_beat_announces_the_member_healthy(kind):
    make_member(kind, "member-1", HealthStatus.PENDING)

    beats_record(kind=kind, beats=[beat("member-1", HealthStatus.HEALTHY)])

    assert events("member-1") == [{
        "aggregate_type": kind.aggregate_type, "aggregate_id": "member-1", "event_type": kind.event("healthy"),
        "payload": {"id": "member-1", "region": "us-east-1", "from_status": "pending", "to_status": "healthy",
                    "reason": "heartbeat"},
    }]


class OutboxRefused(Exception):
    pass


def refuse_outbox_inserts(execute, sql, params, many, context):
    """Fail the statement that inserts outbox events, as the database would on an error."""
    if "outbox_events" in sql and sql.lstrip().upper().startswith("INSERT"):
        raise OutboxRefused
    return execute(sql, params, many, context)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("kind", [CONTROLLERS, HANDLERS], ids=["mc", "mh"])
def test_a_first_beat_whose_event_is_not_written_leaves_no_transition_and_no_audit_row(kind):
    make_member(kind, "member-1", HealthStatus.PENDING)

    with connection.execute_wrapper(refuse_outbox_inserts), pytest.raises(OutboxRefused):
        beats_record(kind=kind, beats=[beat("member-1", HealthStatus.HEALTHY)])

    assert MODELS[kind].objects.get(pk="member-1").health_status == HealthStatus.PENDING
    assert not HealthTransition.objects.filter(component_id="member-1").exists()
    assert not AuditLog.objects.filter(target_id="member-1").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [CONTROLLERS, HANDLERS], ids=["mc", "mh"])
def test_a_steady_beat_announces_nothing(kind):
    make_member(kind, "member-1", HealthStatus.HEALTHY)

    beats_record(kind=kind, beats=[beat("member-1", HealthStatus.HEALTHY)])

    assert events("member-1") == []


@pytest.mark.django_db
@pytest.mark.parametrize("reported", [HealthStatus.DEGRADED, HealthStatus.DRAINING, HealthStatus.UNHEALTHY])
def test_a_controller_reporting_trouble_announces_the_state_it_reported(reported):
    make_controller(controller_id="mc-1", health=HealthStatus.HEALTHY)

    beats_record(kind=CONTROLLERS, beats=[beat("mc-1", reported)])

    assert [(event["event_type"], event["payload"]) for event in events("mc-1")] == [(
        f"controller_{reported}",
        {"id": "mc-1", "region": "us-east-1", "from_status": "healthy", "to_status": str(reported),
         "reason": "heartbeat"},
    )]


@pytest.mark.django_db
@pytest.mark.parametrize("kind", [CONTROLLERS, HANDLERS], ids=["mc", "mh"])
def test_a_member_the_recovery_gate_lets_back_is_announced_once_when_it_passes(kind, settings):
    settings.UNHEALTHY_HOLD_DOWN_SECONDS = 0
    settings.UNHEALTHY_RECOVERY_HEARTBEATS = 2
    make_member(kind, "member-1", HealthStatus.UNHEALTHY)

    beats_record(kind=kind, beats=[beat("member-1", HealthStatus.HEALTHY)])
    assert events("member-1") == []
    beats_record(kind=kind, beats=[beat("member-1", HealthStatus.HEALTHY)])

    assert [(event["event_type"], event["payload"]) for event in events("member-1")] == [(
        kind.event("healthy"),
        {"id": "member-1", "region": "us-east-1", "from_status": "unhealthy", "to_status": "healthy",
         "reason": "heartbeat"},
    )]


@pytest.mark.django_db
def test_the_events_of_a_batch_of_first_beats_are_one_insert():
    ids = [f"mc-first-{number}" for number in range(5)]
    for controller_id in ids:
        make_controller(controller_id=controller_id, health=HealthStatus.PENDING)
    make_controller(controller_id="mc-steady", health=HealthStatus.HEALTHY)
    inserts: list[str] = []

    def count_outbox_inserts(execute, sql, params, many, context):
        if "outbox_events" in sql and sql.lstrip().upper().startswith("INSERT"):
            inserts.append(sql)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(count_outbox_inserts):
        beats_record(kind=CONTROLLERS, beats=[beat(member_id, HealthStatus.HEALTHY) for member_id in
                                              [*ids, "mc-steady"]])

    assert len(inserts) == 1
    assert sorted(OutboxEvent.objects.filter(event_type="controller_healthy").values_list("aggregate_id", flat=True)) \
        == ids
