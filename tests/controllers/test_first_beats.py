"""Beats that change a member's health (a pending member's first beat above all) are written together: the beats
that arrive while another write runs go in the next write, one transaction for all of them, each answered only
once its own change committed (controllers.heartbeats.HeartbeatRecorder)."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.db import DataError, connection

from audit.models import AuditLog
from controllers.heartbeats import HeartbeatRecorder
from controllers.members import CONTROLLERS
from controllers.models import HealthStatus, HealthTransition, MeetingController
from controllers.services.beats import Beat
from controllers.services.registration import controller_register
from darktower.errors import NotFound
from tests.controllers.test_heartbeats import wait_for
from tests.factories import make_controller


@pytest.fixture
def recorder(settings):
    settings.HEARTBEAT_FLUSH_INTERVAL_MS = 5000  # no flush thread work during a test
    recorder = HeartbeatRecorder(CONTROLLERS)
    yield recorder
    recorder.stop(timeout=5)


class Callers:
    """Calls of recorder.record, each in its own thread (a gRPC worker's), with what each raised."""

    def __init__(self) -> None:
        self.threads: list[threading.Thread] = []
        self.errors: dict[str, BaseException] = {}

    def start(self, name: str, call: Callable[[], Any]) -> None:
        def run() -> None:
            try:
                call()
            except Exception as exc:  # surfaced by the test: an exception in a thread would otherwise vanish
                self.errors[name] = exc
            finally:
                connection.close()

        thread = threading.Thread(target=run)
        thread.start()
        self.threads.append(thread)

    def join(self) -> None:
        for thread in self.threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self.threads)


def beats_while_a_write_runs(recorder: HeartbeatRecorder, beats: list[Beat]) -> Callers:
    """Send `beats` from threads of their own while the recorder's write lock is held (a flush is writing), and
    return once every one of them waits for the next write; the write starts when the lock is released."""
    callers = Callers()
    with recorder._write_lock:
        for number, one in enumerate(beats):
            callers.start(f"{number}:{one.member_id}", lambda one=one: recorder.record(one))
        assert wait_for(lambda: recorder.waiting_count() == len(beats))
    callers.join()
    return callers


def pending_fleet(count: int, recorder: HeartbeatRecorder) -> list[str]:
    ids = [f"mc-first-{number:03d}" for number in range(count)]
    for controller_id in ids:
        make_controller(controller_id=controller_id, health=HealthStatus.PENDING)
        recorder.remember(controller_id, HealthStatus.PENDING)
    return ids


@pytest.mark.django_db(transaction=True)
def test_first_beats_that_arrive_together_are_written_in_one_transaction(recorder):
    ids = pending_fleet(12, recorder)

    callers = beats_while_a_write_runs(
        recorder, [Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": 1}) for controller_id in ids]
    )

    assert callers.errors == {}
    assert set(MeetingController.objects.filter(pk__in=ids).values_list("health_status", flat=True)) == {"healthy"}
    transitions = HealthTransition.objects.filter(component_id__in=ids)
    assert sorted(transitions.values_list("component_id", flat=True)) == ids  # exactly one each
    assert set(transitions.values_list("from_status", "to_status", "reason")) == {("pending", "healthy", "heartbeat")}
    # One transaction: now() is the transaction's start, the same in every row it wrote.
    assert len(set(transitions.values_list("created_at", flat=True))) == 1
    audits = AuditLog.objects.filter(target_id__in=ids)
    assert sorted(audits.values_list("target_id", flat=True)) == ids
    assert set(audits.values_list("event_type", flat=True)) == {"controller_healthy"}
    assert set(MeetingController.objects.filter(pk__in=ids).values_list("current_meetings", flat=True)) == {1}
    assert recorder.waiting_count() == 0
    # What the process learnt: the next beats are steady, kept in memory.
    assert all(recorder.record_in_memory(Beat(controller_id, HealthStatus.HEALTHY, {})) for controller_id in ids)


@pytest.mark.django_db(transaction=True)
def test_two_beats_of_one_member_in_a_write_make_one_transition_with_the_newest_values(recorder):
    [controller_id] = pending_fleet(1, recorder)

    callers = beats_while_a_write_runs(recorder, [
        Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": 1, "cpu_usage_percent": 20.0}),
        Beat(controller_id, HealthStatus.HEALTHY, {"current_meetings": 2, "cpu_usage_percent": None}),
    ])

    assert callers.errors == {}
    row = MeetingController.objects.get(pk=controller_id)
    assert (row.health_status, row.current_meetings, row.cpu_usage_percent) == ("healthy", 2, 20.0)
    assert HealthTransition.objects.filter(component_id=controller_id).count() == 1
    assert AuditLog.objects.filter(target_id=controller_id).count() == 1


@pytest.mark.django_db(transaction=True)
def test_an_unknown_member_in_a_write_is_not_found_and_the_others_are_written(recorder):
    ids = pending_fleet(3, recorder)
    recorder.remember("mc-deleted", HealthStatus.PENDING)  # known to the process, row deleted by an operator

    callers = beats_while_a_write_runs(
        recorder, [Beat(controller_id, HealthStatus.HEALTHY, {}) for controller_id in [*ids, "mc-deleted"]]
    )

    assert set(callers.errors) == {"3:mc-deleted"}
    assert isinstance(callers.errors["3:mc-deleted"], NotFound)
    assert set(MeetingController.objects.filter(pk__in=ids).values_list("health_status", flat=True)) == {"healthy"}
    assert HealthTransition.objects.filter(component_id__in=ids).count() == 3


@pytest.mark.django_db(transaction=True)
def test_a_beat_the_database_refuses_fails_alone(recorder):
    ids = pending_fleet(3, recorder)
    # Out of the column's range: the database refuses the write that carries it, not the others'.
    refused = Beat(ids[1], HealthStatus.HEALTHY, {"current_meetings": 2**40})

    callers = beats_while_a_write_runs(recorder, [
        Beat(ids[0], HealthStatus.HEALTHY, {}), refused, Beat(ids[2], HealthStatus.HEALTHY, {}),
    ])

    assert set(callers.errors) == {f"1:{ids[1]}"}
    assert isinstance(callers.errors[f"1:{ids[1]}"], DataError)
    states = dict(MeetingController.objects.filter(pk__in=ids).values_list("controller_id", "health_status"))
    assert states == {ids[0]: "healthy", ids[1]: "pending", ids[2]: "healthy"}
    assert sorted(HealthTransition.objects.filter(component_id__in=ids).values_list("component_id", flat=True)) == [
        ids[0], ids[2],
    ]


@pytest.mark.django_db(transaction=True)
def test_a_reregistration_racing_a_write_of_first_beats_is_recorded_once_each(recorder):
    # The member restarts (re-registers, from unhealthy: back to pending) while its first beats wait for a write:
    # whichever commits first, each transition is recorded exactly once and the row ends in the state the rules
    # give for that order.
    ids = pending_fleet(4, recorder)
    MeetingController.objects.filter(pk=ids[0]).update(health_status=HealthStatus.UNHEALTHY)
    recorder.remember(ids[0], HealthStatus.UNHEALTHY)
    register = threading.Event()
    callers = Callers()
    with recorder._write_lock:
        for controller_id in ids:
            callers.start(controller_id, lambda controller_id=controller_id: recorder.record(
                Beat(controller_id, HealthStatus.HEALTHY, {})
            ))
        assert wait_for(lambda: recorder.waiting_count() == len(ids))
        callers.start("register", lambda: (register.set(), controller_register(
            controller_id=ids[0], region="us-east-1", grpc_endpoint="grpc://mc.us-east-1.internal:50052",
            webtransport_endpoint=None, max_meetings=10, max_participants=100,
        )))
        assert register.wait(10)
    callers.join()

    assert callers.errors == {}
    transitions = list(
        HealthTransition.objects.filter(component_id=ids[0]).order_by("created_at", "id")
        .values_list("from_status", "to_status", "reason")
    )
    # unhealthy -> pending by the registration, then (if the beat came after it) pending -> healthy; a beat before
    # it only counts toward the hold-down (unhealthy stays), and the registration then makes it pending.
    assert transitions in (
        [("unhealthy", "pending", "registered"), ("pending", "healthy", "heartbeat")],
        [("unhealthy", "pending", "registered")],
    )
    expected = "healthy" if len(transitions) == 2 else "pending"
    assert MeetingController.objects.get(pk=ids[0]).health_status == expected
    assert set(MeetingController.objects.filter(pk__in=ids[1:]).values_list("health_status", flat=True)) == {"healthy"}
    assert HealthTransition.objects.filter(component_id__in=ids[1:]).count() == 3
    assert AuditLog.objects.filter(target_id=ids[0], action="heartbeat").count() == len(transitions) - 1
