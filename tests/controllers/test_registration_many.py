"""Registrations arriving together (controller_register_many): one transaction, each call its own outcome, exactly
the rows one registration leaves; a registration refused by a rule or by the database fails alone."""

from __future__ import annotations

import pytest
from django.db import DatabaseError, connection

from audit.models import AuditLog
from controllers.models import HealthStatus, HealthTransition, MeetingController
from controllers.services.registration import (
    ControllerRegistration,
    Registration,
    controller_register,
    controller_register_many,
)
from darktower.errors import PermissionDenied
from tests.factories import make_controller

pytestmark = pytest.mark.django_db(transaction=True)


def registration(controller_id: str, **overrides) -> ControllerRegistration:
    values = {"controller_id": controller_id, "region": "us-east-1", "grpc_endpoint": "grpc://mc.internal:50052",
              "webtransport_endpoint": None, "max_meetings": 10, "max_participants": 100,
              "actor_client_id": "svc-client"}
    values.update(overrides)
    return ControllerRegistration(**values)


def transactions(table: str, column: str, like: str) -> int:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT count(DISTINCT xmin::text) FROM {table} WHERE {column} LIKE %s", [like])
        return cursor.fetchone()[0]


def test_registrations_together_are_one_transaction_with_the_rows_of_each():
    controller_register(**vars(registration("mc-many-0")))  # a re-registration among them

    outcomes = controller_register_many(registrations=[registration(f"mc-many-{n}") for n in (2, 0, 1)])

    assert [(outcome.member_id, outcome.created) for outcome in outcomes] == [
        ("mc-many-2", True), ("mc-many-0", False), ("mc-many-1", True)
    ]
    assert all(isinstance(outcome, Registration) for outcome in outcomes)
    assert transactions("meeting_controllers", "controller_id", "mc-many-%") == 1
    assert HealthTransition.objects.filter(component_id__startswith="mc-many-", from_status=None,
                                           to_status=HealthStatus.PENDING).count() == 3
    assert AuditLog.objects.filter(target_id__startswith="mc-many-", event_type="controller_registered").count() == 3
    assert AuditLog.objects.filter(target_id="mc-many-0", event_type="controller_reregistered").count() == 1
    with connection.cursor() as cursor:
        cursor.execute("SELECT event_type, count(*) FROM outbox_events WHERE aggregate_id LIKE 'mc-many-%%' "
                       "GROUP BY 1 ORDER BY 1")
        assert cursor.fetchall() == [("controller_registered", 3), ("controller_reregistered", 1)]


def test_another_credentials_member_is_refused_alone_with_its_audit_row():
    make_controller(controller_id="mc-many-theirs", owner_client_id="svc-other")

    outcomes = controller_register_many(
        registrations=[registration("mc-many-a"), registration("mc-many-theirs"), registration("mc-many-b")]
    )

    assert isinstance(outcomes[0], Registration) and isinstance(outcomes[2], Registration)
    assert isinstance(outcomes[1], PermissionDenied)
    assert MeetingController.objects.get(pk="mc-many-theirs").owner_client_id == "svc-other"
    assert AuditLog.objects.filter(target_id="mc-many-theirs", result="failure").count() == 1
    assert MeetingController.objects.filter(pk__in=["mc-many-a", "mc-many-b"]).count() == 2


def test_a_row_the_database_refuses_fails_alone():
    # A region longer than its column: validation refuses it at the door; here the database does.
    outcomes = controller_register_many(
        registrations=[registration("mc-many-a"), registration("mc-many-bad", region="r" * 60),
                       registration("mc-many-b")]
    )

    assert isinstance(outcomes[0], Registration) and isinstance(outcomes[2], Registration)
    assert isinstance(outcomes[1], DatabaseError)
    assert sorted(MeetingController.objects.filter(controller_id__startswith="mc-many-").values_list(
        "controller_id", flat=True)) == ["mc-many-a", "mc-many-b"]
    assert not HealthTransition.objects.filter(component_id="mc-many-bad").exists()
    assert not AuditLog.objects.filter(target_id="mc-many-bad").exists()
