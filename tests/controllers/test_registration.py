"""Registration and heartbeat services on the real database."""

from __future__ import annotations

import threading
import time

import pytest
from django.db import connection, transaction
from django.utils import timezone

from audit.models import AuditLog
from controllers.health_rules import health_after
from controllers.members import CONTROLLERS, HANDLERS
from controllers.models import HealthStatus, HealthTransition, MediaHandler, MeetingController
from controllers.services import beats as beats_module
from controllers.services.beats import Beat, beats_flush, beats_record
from controllers.services.registration import controller_register, handler_register
from darktower.errors import NotFound
from tests.beats import controller_heartbeat, handler_load_report
from tests.factories import make_controller, make_handler
from tests.plans import copy_members, record_plans

pytestmark = pytest.mark.django_db


def register(controller_id: str = "mc-1", **overrides):
    kwargs = {
        "controller_id": controller_id,
        "region": "us-east-1",
        "grpc_endpoint": "grpc://mc1.internal:50052",
        "webtransport_endpoint": "https://mc1.internal:4433",
        "max_meetings": 100,
        "max_participants": 1000,
        "actor_client_id": "svc-client",
    }
    kwargs.update(overrides)
    return controller_register(**kwargs)


def audit_rows(target_id: str):
    return list(AuditLog.objects.filter(target_id=target_id).order_by("id").values_list("event_type", flat=True))


def backdate(controller_id: str, seconds: int) -> None:
    with connection.cursor() as cursor:
        cursor.execute(
            "UPDATE meeting_controllers SET last_heartbeat_at = now() - make_interval(secs => %s),"
            " created_at = now() - make_interval(secs => %s) WHERE controller_id = %s",
            [seconds, seconds, controller_id],
        )


def test_register_creates_a_pending_record_with_audit_and_transition():
    result = register()

    controller = MeetingController.objects.get(pk="mc-1")
    assert result.created and result.from_status is None and result.health_status == "pending"
    assert controller.health_status == HealthStatus.PENDING
    assert (controller.region, controller.grpc_endpoint, controller.endpoint) == (
        "us-east-1", "grpc://mc1.internal:50052", "grpc://mc1.internal:50052",
    )
    assert controller.webtransport_endpoint == "https://mc1.internal:4433"
    assert (controller.max_meetings, controller.max_participants) == (100, 1000)
    assert audit_rows("mc-1") == ["controller_registered"]
    audit = AuditLog.objects.get(target_id="mc-1")
    assert audit.actor_type == "service" and audit.metadata["client_id"] == "svc-client"
    transition = HealthTransition.objects.get(component_id="mc-1")
    assert (transition.from_status, transition.to_status, transition.reason) == (None, "pending", "registered")


def test_register_upserts_keeping_created_at_and_updating_everything_else():
    register()
    backdate("mc-1", 3600)
    created_at = MeetingController.objects.get(pk="mc-1").created_at

    result = register(
        region="eu-west-1", grpc_endpoint="https://mc1b.internal:443", webtransport_endpoint=None,
        max_meetings=5, max_participants=50,
    )

    controller = MeetingController.objects.get(pk="mc-1")
    assert not result.created and result.from_status == "pending"
    assert controller.created_at == created_at
    assert (controller.region, controller.grpc_endpoint, controller.webtransport_endpoint) == (
        "eu-west-1", "https://mc1b.internal:443", None,
    )
    assert (controller.max_meetings, controller.max_participants) == (5, 50)
    assert controller.last_heartbeat_at > created_at
    assert MeetingController.objects.count() == 1
    assert audit_rows("mc-1") == ["controller_registered", "controller_reregistered"]


@pytest.mark.parametrize("state", [HealthStatus.DRAINING, HealthStatus.UNHEALTHY])
def test_reregistration_brings_draining_and_unhealthy_back_to_pending(state):
    make_controller(controller_id="mc-1", health=state)

    result = register()

    assert result.from_status == state and result.health_status == "pending"
    assert MeetingController.objects.get(pk="mc-1").health_status == "pending"
    assert HealthTransition.objects.filter(component_id="mc-1", to_status="pending", reason="registered").exists()


@pytest.mark.parametrize("state", [HealthStatus.HEALTHY, HealthStatus.DEGRADED])
def test_reregistration_keeps_a_working_state(state):
    make_controller(controller_id="mc-1", health=state)

    register()

    assert MeetingController.objects.get(pk="mc-1").health_status == state
    assert not HealthTransition.objects.filter(component_id="mc-1").exists()


def test_heartbeat_updates_capacity_and_database_time():
    register()
    backdate("mc-1", 20)

    outcome = controller_heartbeat(
        controller_id="mc-1", reported=HealthStatus.HEALTHY, current_meetings=7, current_participants=70,
        cpu_usage_percent=12.5, memory_usage_percent=40.0,
    )

    controller = MeetingController.objects.get(pk="mc-1")
    with connection.cursor() as cursor:
        cursor.execute("SELECT now() - last_heartbeat_at FROM meeting_controllers WHERE controller_id = 'mc-1'")
        age = cursor.fetchone()[0]
    assert age.total_seconds() < 5
    assert (controller.current_meetings, controller.current_participants) == (7, 70)
    assert (controller.max_meetings, controller.max_participants) == (100, 1000)  # None leaves them
    assert (controller.cpu_usage_percent, controller.memory_usage_percent) == (12.5, 40.0)
    assert (outcome.from_status, outcome.to_status) == ("pending", "healthy")


def test_heartbeat_on_a_missing_controller_is_not_found():
    with pytest.raises(NotFound):
        controller_heartbeat(controller_id="nobody", reported=HealthStatus.HEALTHY, current_meetings=1)
    assert not MeetingController.objects.exists()


def test_multiple_heartbeats_keep_the_latest_values_and_audit_only_changes():
    register()
    for meetings in (1, 2, 3):
        controller_heartbeat(controller_id="mc-1", reported=HealthStatus.HEALTHY, current_meetings=meetings)

    controller = MeetingController.objects.get(pk="mc-1")
    assert controller.current_meetings == 3
    assert controller.health_status == "healthy"
    # Registered, then pending -> healthy once; two heartbeats that changed nothing wrote nothing.
    assert audit_rows("mc-1") == ["controller_registered", "controller_healthy"]
    assert HealthTransition.objects.filter(component_id="mc-1").count() == 2


@pytest.mark.parametrize("reported", [HealthStatus.HEALTHY, HealthStatus.PENDING])
def test_pending_becomes_healthy_on_a_good_heartbeat(reported):
    register()

    outcome = controller_heartbeat(controller_id="mc-1", reported=reported)

    assert outcome.to_status == "healthy"
    transition = HealthTransition.objects.filter(component_id="mc-1").latest("id")
    assert (transition.from_status, transition.to_status, transition.reason) == ("pending", "healthy", "heartbeat")


def test_draining_is_kept_whatever_the_heartbeat_says():
    make_controller(controller_id="mc-1", health=HealthStatus.DRAINING)

    for reported in HealthStatus:
        outcome = controller_heartbeat(controller_id="mc-1", reported=reported, current_meetings=3)
        assert outcome.to_status == "draining"

    assert MeetingController.objects.get(pk="mc-1").current_meetings == 3
    assert audit_rows("mc-1") == []


@pytest.mark.parametrize("reported", [HealthStatus.DEGRADED, HealthStatus.DRAINING, HealthStatus.UNHEALTHY])
def test_a_healthy_controller_reporting_trouble_is_stored_as_reported(reported):
    make_controller(controller_id="mc-1", health=HealthStatus.HEALTHY)

    outcome = controller_heartbeat(controller_id="mc-1", reported=reported)

    assert outcome.to_status == reported
    assert audit_rows("mc-1") == [f"controller_{reported}"]
    transition = HealthTransition.objects.get(component_id="mc-1")
    assert (transition.from_status, transition.to_status) == ("healthy", reported)
    assert (transition.reason, transition.actor_type, transition.metadata) == (
        "heartbeat", "service", {"reported": reported},
    )


def test_degraded_recovers_to_healthy_and_no_opinion_changes_nothing():
    make_controller(controller_id="mc-1", health=HealthStatus.DEGRADED)

    assert controller_heartbeat(controller_id="mc-1", reported=HealthStatus.PENDING).to_status == "degraded"
    assert controller_heartbeat(controller_id="mc-1", reported=HealthStatus.HEALTHY).to_status == "healthy"


def test_an_unhealthy_controller_returns_only_after_the_hold_down(settings):
    settings.UNHEALTHY_HOLD_DOWN_SECONDS = 0
    settings.UNHEALTHY_RECOVERY_HEARTBEATS = 2
    make_controller(controller_id="mc-1", health=HealthStatus.UNHEALTHY)

    first = controller_heartbeat(controller_id="mc-1", reported=HealthStatus.HEALTHY)
    second = controller_heartbeat(controller_id="mc-1", reported=HealthStatus.HEALTHY)

    assert first.to_status == "unhealthy"
    assert second.to_status == "healthy"
    assert audit_rows("mc-1") == ["controller_healthy"]


def test_heartbeat_resets_in_flight_accounting():
    make_controller(controller_id="mc-1", assigned_since_heartbeat=4)

    controller_heartbeat(controller_id="mc-1", reported=HealthStatus.HEALTHY, current_meetings=9)

    assert MeetingController.objects.get(pk="mc-1").assigned_since_heartbeat == 0


def test_batch_writes_every_member_and_skips_unknown_ones():
    for number in range(5):
        make_controller(controller_id=f"mc-{number}", health=HealthStatus.HEALTHY)
    beats = [
        Beat(f"mc-{number}", HealthStatus.HEALTHY, {"current_meetings": number * 10, "cpu_usage_percent": None})
        for number in range(5)
    ]

    outcomes = beats_record(kind=CONTROLLERS, beats=[*beats, Beat("ghost", HealthStatus.HEALTHY, {})])

    assert sorted(outcome.member_id for outcome in outcomes) == [f"mc-{number}" for number in range(5)]
    assert dict(MeetingController.objects.values_list("controller_id", "current_meetings")) == {
        f"mc-{number}": number * 10 for number in range(5)
    }
    assert not AuditLog.objects.filter(target_type="meeting_controller").exists()


@pytest.mark.parametrize("kind", [CONTROLLERS, HANDLERS], ids=["controllers", "handlers"])
def test_a_flush_learns_only_what_differs_from_the_states_it_knows(kind):
    make = make_controller if kind is CONTROLLERS else make_handler
    steady, unaware, moving, recovering = (
        make(health=HealthStatus.HEALTHY), make(health=HealthStatus.DRAINING), make(health=HealthStatus.HEALTHY),
        make(health=HealthStatus.UNHEALTHY, unhealthy_since=timezone.now()),  # in its hold-down: stays
    )
    members = [steady.pk, unaware.pk, moving.pk, recovering.pk]
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {kind.table} SET last_heartbeat_at = now() - interval '1 hour' "
                       f"WHERE {kind.pk} = ANY(%s)", [members])
    known = {steady.pk: "healthy", unaware.pk: "healthy", moving.pk: "healthy", recovering.pk: "unhealthy",
             "ghost": "healthy"}
    beats = [Beat(member_id, HealthStatus.HEALTHY, {}) for member_id in (steady.pk, unaware.pk, recovering.pk)]
    beats += [Beat(moving.pk, HealthStatus.UNHEALTHY, {}), Beat("ghost", HealthStatus.HEALTHY, {})]

    written = beats_flush(kind=kind, beats=beats, known=known)

    # The steady member is written but not returned; the one an operator drained comes back with its state.
    assert {(outcome.member_id, outcome.from_status, outcome.to_status) for outcome in written.outcomes} == {
        (unaware.pk, "draining", "draining"), (moving.pk, "healthy", "unhealthy"),
        (recovering.pk, "unhealthy", "unhealthy"),
    }
    assert written.missing == ["ghost"]
    # Every member with a row was written, returned or not.
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {kind.pk} FROM {kind.table} WHERE {kind.pk} = ANY(%s) "
                       "AND last_heartbeat_at > now() - interval '1 minute'", [members])
        assert sorted(row[0] for row in cursor.fetchall()) == sorted(members)
    # Without states known (beats_record), every member that exists comes back.
    assert {outcome.member_id for outcome in beats_record(kind=kind, beats=beats)} == set(members)


@pytest.mark.parametrize("kind", [CONTROLLERS, HANDLERS], ids=["controllers", "handlers"])
def test_a_flush_probes_its_members_by_key_instead_of_reading_the_fleet(kind, monkeypatch):
    # A fleet of 20,000 (bench 1's), a flush of 300 of them: the planner must probe by key, not read the table.
    member = make_controller() if kind is CONTROLLERS else make_handler()
    copy_members(kind.table, kind.pk, member.pk, prefix="member-", count=19999)
    plans = record_plans(monkeypatch, beats_module)
    ids = [f"member-{number:05d}" for number in range(1, 20000, 67)]
    outcomes = beats_record(kind=kind, beats=[Beat(member_id, HealthStatus.HEALTHY, {}) for member_id in ids])

    assert len(outcomes) == len(ids) == 299
    [plan] = plans
    assert f"Seq Scan on {kind.table}" not in plan, plan
    assert f"{kind.table}_pkey" in plan, plan
    assert member.pk not in {outcome.member_id for outcome in outcomes}


@pytest.mark.parametrize("kind", [CONTROLLERS, HANDLERS], ids=["controllers", "handlers"])
def test_a_steady_flush_probes_its_members_by_key_and_returns_nothing(kind, monkeypatch):
    # Every beat of a steady fleet's flush takes the compare-and-set path (no row lock first): it too must
    # probe the primary key for the batch instead of reading the fleet.
    member = (make_controller if kind is CONTROLLERS else make_handler)(health=HealthStatus.HEALTHY)
    copy_members(kind.table, kind.pk, member.pk, prefix="member-", count=19999)
    plans = record_plans(monkeypatch, beats_module)
    ids = [f"member-{number:05d}" for number in range(1, 20000, 67)]
    values = {"current_meetings": 3} if kind is CONTROLLERS else {"current_streams": 3}

    written = beats_flush(
        kind=kind, beats=[Beat(member_id, HealthStatus.HEALTHY, values) for member_id in ids],
        known=dict.fromkeys(ids, "healthy"),
    )

    assert (written.outcomes, written.missing) == ([], [])
    [plan] = plans
    assert f"Seq Scan on {kind.table}" not in plan, plan
    assert f"{kind.table}_pkey" in plan, plan
    column = next(iter(values))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(*) FROM {kind.table} WHERE {column} = 3 "
                       "AND last_heartbeat_at > now() - interval '1 minute'")
        assert cursor.fetchone()[0] == len(ids) == 299


@pytest.mark.django_db(transaction=True)
def test_a_steady_beat_that_waited_for_a_concurrent_drain_is_written_from_the_drained_state():
    # The process knows mc-race healthy, so its beat is flushed by compare-and-set; an operator drains the MC
    # in a transaction that commits while the flush waits for the row. The flush must then see `draining` (not
    # write the beat as if still healthy) and tell its caller.
    make_controller(controller_id="mc-race", health=HealthStatus.HEALTHY, current_meetings=1)
    results = {}

    def flush():
        try:
            results["written"] = beats_flush(
                kind=CONTROLLERS, beats=[Beat("mc-race", HealthStatus.HEALTHY, {"current_meetings": 7})],
                known={"mc-race": "healthy"},
            )
        except Exception as exc:  # reported by the assertion below
            results["error"] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=flush)
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute("UPDATE meeting_controllers SET health_status = 'draining' WHERE controller_id = 'mc-race'")
        thread.start()
        deadline = time.monotonic() + 30
        waiting = 0
        while not waiting and time.monotonic() < deadline:
            # A transaction sees one snapshot of pg_stat_activity unless it asks for a fresh one.
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
                           "AND datname = current_database() AND query LIKE 'WITH batch AS MATERIALIZED%'")
            waiting = cursor.fetchone()[0]
            time.sleep(0.02)
        assert waiting == 1, "the flush never waited for the row"
    thread.join(timeout=30)

    assert "error" not in results, results
    written = results["written"]
    assert [(o.member_id, o.from_status, o.to_status) for o in written.outcomes] == [
        ("mc-race", "draining", "draining")
    ]
    controller = MeetingController.objects.get(pk="mc-race")
    assert (controller.health_status, controller.current_meetings) == ("draining", 7)
    assert not HealthTransition.objects.filter(component_id="mc-race", reason="heartbeat").exists()


def test_media_handler_registration_and_load_report():
    result = handler_register(
        handler_id="mh-1", region="us-east-1", grpc_endpoint="grpc://mh1.internal:50053",
        webtransport_endpoint="https://mh1.internal:4433", max_streams=500,
    )
    outcome = handler_load_report(
        handler_id="mh-1", reported=HealthStatus.HEALTHY, current_streams=40, cpu_usage_percent=10.0,
        memory_usage_percent=20.0, bandwidth_usage_percent=30.0,
    )

    handler = MediaHandler.objects.get(pk="mh-1")
    assert result.created and outcome.to_status == "healthy"
    assert (handler.max_streams, handler.current_streams, handler.max_bitrate_mbps) == (500, 40, 0)
    assert (handler.cpu_usage_percent, handler.memory_usage_percent, handler.bandwidth_usage_percent) == (
        10.0, 20.0, 30.0,
    )
    assert audit_rows("mh-1") == ["media_handler_registered", "media_handler_healthy"]


def test_load_report_for_an_unknown_handler_is_not_found():
    make_handler(handler_id="mh-known")
    with pytest.raises(NotFound):
        handler_load_report(
            handler_id="mh-unknown", reported=HealthStatus.HEALTHY, current_streams=1, cpu_usage_percent=1.0,
            memory_usage_percent=1.0, bandwidth_usage_percent=1.0,
        )


def test_health_after_matches_the_sql_for_every_state_pair():
    """The Python rules and the CASE generated from them agree (draining and recovery states included)."""
    ids = []
    for current in HealthStatus:
        for reported in HealthStatus:
            controller_id = f"mc-{current}-{reported}"
            make_controller(controller_id=controller_id, health=current)
            ids.append((controller_id, current, reported))
    started = time.monotonic()
    outcomes = {
        outcome.member_id: outcome
        for outcome in beats_record(kind=CONTROLLERS, beats=[Beat(i, r, {}) for i, _, r in ids])
    }
    assert time.monotonic() - started < 30
    for controller_id, current, reported in ids:
        expected = health_after(current, reported)
        if current == "pending" and reported in ("healthy", "degraded", "pending"):
            expected = "degraded" if reported == "degraded" else "healthy"
        assert outcomes[controller_id].to_status == expected, (current, reported)


def test_a_registration_is_one_statement_with_its_transition_outbox_and_audit_rows(django_assert_num_queries):
    # A fleet restarting registers every member at once: each registration is one round trip to the database, its
    # transition, outbox and audit rows written by the same statement as the row.
    with django_assert_num_queries(1):
        created = register("mc-one")
    make_controller(controller_id="mc-unowned", health=HealthStatus.UNHEALTHY)  # older than ownership
    with django_assert_num_queries(1):
        claimed = register("mc-unowned")

    assert (created.created, created.from_status, created.health_status) == (True, None, "pending")
    assert (claimed.created, claimed.from_status, claimed.health_status) == (False, "unhealthy", "pending")
    assert list(HealthTransition.objects.filter(component_id__in=["mc-one", "mc-unowned"]).order_by("component_id")
                .values_list("component_id", "from_status", "to_status", "reason")) == [
        ("mc-one", None, "pending", "registered"), ("mc-unowned", "unhealthy", "pending", "registered"),
    ]
    assert list(AuditLog.objects.filter(target_id="mc-unowned").order_by("id").values_list("event_type", "action")) == [
        ("controller_claimed", "claim"), ("controller_reregistered", "register"),
    ]
    assert MeetingController.objects.get(pk="mc-unowned").owner_client_id == "svc-client"
