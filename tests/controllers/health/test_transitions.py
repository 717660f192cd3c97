"""The transition history: compare-and-set changes that record themselves, the list helper for callers that
know their transitions, the database's guarantees (CHECKs, bookkeeping trigger), the migration, and retention."""

from __future__ import annotations

import pytest
from django.db import IntegrityError, connection, transaction
from django.db.migrations.executor import MigrationExecutor

from controllers.members import CONTROLLERS
from controllers.models import HealthStatus, HealthTransition, MeetingController
from controllers.services.transitions import (
    Transition,
    health_transition,
    health_transitions_prune,
    transitions_record,
)
from darktower.retention import retention_run
from tests.factories import make_controller
from tests.fixtures.jobs import ago

pytestmark = pytest.mark.django_db


def test_a_compare_and_set_change_records_its_transition(operator):
    controller_id = make_controller().controller_id

    changed = health_transition(
        kind=CONTROLLERS, ids=[controller_id], from_states=[HealthStatus.HEALTHY, HealthStatus.DEGRADED],
        to_status=HealthStatus.UNHEALTHY, reason="operator", actor_type="user", actor_user_id=operator.pk,
        metadata={"note": "maintenance"},
    )

    assert [(row.member_id, row.from_status, row.to_status) for row in changed] == [
        (controller_id, "healthy", "unhealthy")
    ]
    row = HealthTransition.objects.get()
    assert (row.component_type, row.reason, row.actor_user_id, row.metadata) == (
        "controller", "operator", operator.pk, {"note": "maintenance"}
    )
    # Lost the race: the state is no longer one of from_states, nothing changes, nothing is recorded.
    assert health_transition(
        kind=CONTROLLERS, ids=[controller_id], from_states=[HealthStatus.HEALTHY],
        to_status=HealthStatus.DRAINING, reason="operator",
    ) == []
    assert HealthTransition.objects.count() == 1


def test_transitions_record_inserts_a_list_in_one_statement(django_assert_num_queries):
    rows = [
        Transition("controller", "mc-1", "us-east-1", None, "pending", "registered", actor_type="service"),
        Transition("handler", "mh-1", "eu-west-1", "pending", "healthy", "heartbeat", metadata={"seq": 1}),
    ]
    with django_assert_num_queries(1):
        assert transitions_record(rows) == 2
    assert transitions_record([]) == 0
    first = HealthTransition.objects.get(component_id="mc-1")
    assert (first.from_status, first.to_status, first.actor_type) == (None, "pending", "service")
    assert HealthTransition.objects.get(component_id="mh-1").metadata == {"seq": 1}


@pytest.mark.parametrize(
    "row",
    [
        Transition("controller", "mc-1", "r", "healthy", "healthy", "stale"),  # a no-op change
        Transition("controller", "mc-1", "r", "healthy", "unhealthy", "because"),
        Transition("switch", "mc-1", "r", "healthy", "unhealthy", "stale"),
        Transition("controller", "mc-1", "r", "healthy", "gone", "stale"),
        Transition("controller", "mc-1", "r", "healthy", "unhealthy", "stale", actor_type="robot"),
    ],
)
def test_the_database_refuses_invalid_transitions(row):
    with pytest.raises(IntegrityError), transaction.atomic():
        transitions_record([row])


def test_the_trigger_keeps_the_bookkeeping_whoever_changes_the_state():
    controller = make_controller(health=HealthStatus.DRAINING)
    MeetingController.objects.filter(pk=controller.pk).update(
        drain_deadline=ago(seconds=-60), drain_target_controller_id=make_controller().controller_id
    )

    # A raw UPDATE that knows nothing of the new columns.
    with connection.cursor() as cursor:
        cursor.execute("UPDATE meeting_controllers SET health_status = 'unhealthy' WHERE controller_id = %s",
                       [controller.pk])
    row = MeetingController.objects.get(pk=controller.pk)
    assert row.unhealthy_since is not None and row.health_changed_at == row.unhealthy_since
    assert (row.drain_deadline, row.drain_target_controller_id) == (None, None)

    MeetingController.objects.filter(pk=controller.pk).update(good_heartbeats=5)
    MeetingController.objects.filter(pk=controller.pk).update(health_status=HealthStatus.HEALTHY)
    row = MeetingController.objects.get(pk=controller.pk)
    assert (row.unhealthy_since, row.good_heartbeats) == (None, 0)


def test_the_drain_columns_belong_to_draining_mcs():
    controller_id = make_controller().controller_id
    with pytest.raises(IntegrityError), transaction.atomic():
        MeetingController.objects.filter(pk=controller_id).update(drain_deadline=ago(seconds=-60))
    with pytest.raises(IntegrityError), transaction.atomic():
        MeetingController.objects.filter(pk=controller_id).update(
            health_status=HealthStatus.DRAINING, drain_deadline=ago(seconds=-60),
            drain_target_controller_id=controller_id,
        )


def test_retention_deletes_transitions_past_the_period_only(settings):
    settings.RETENTION_HEALTH_TRANSITIONS_DAYS = 30
    transitions_record([Transition("controller", f"mc-{n}", "r", None, "pending", "registered") for n in range(3)])
    HealthTransition.objects.filter(component_id="mc-0").update(created_at=ago(days=30, seconds=1))
    HealthTransition.objects.filter(component_id="mc-1").update(created_at=ago(days=30))

    assert health_transitions_prune(dry_run=True) == 1
    counts = {row.name: row.count for row in retention_run()}

    assert counts["health_transitions"] == 1
    assert sorted(HealthTransition.objects.values_list("component_id", flat=True)) == ["mc-1", "mc-2"]


@pytest.mark.django_db(transaction=True)
def test_the_migration_reverses_and_reapplies():
    executor = MigrationExecutor(connection)
    executor.migrate([("controllers", "0004_downgrade_health_states")])
    with connection.cursor() as cursor:
        cursor.execute("SELECT to_regclass('controller_health_transitions'), to_regclass('controller_sweep_state')")
        assert cursor.fetchone() == (None, None)
    executor.loader.build_graph()
    executor.migrate(executor.loader.graph.leaf_nodes())
    make_controller(health=HealthStatus.UNHEALTHY)
    assert HealthTransition.objects.count() == 0
