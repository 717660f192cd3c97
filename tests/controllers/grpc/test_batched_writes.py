"""Calls that need the database (a registration, a beat that changes health) wait for it without holding a worker
thread: each joins the calls waiting for its method's writer and is answered once the write that took it committed,
one transaction for everything that waited (controllers.grpc.batching). A call the database or a rule refuses fails
alone; the others of its write are answered OK."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import grpc
import pytest
from django.db import connection, connections

from audit.models import AuditLog
from controllers.grpc.server import GrpcServer
from controllers.models import HealthStatus, HealthTransition, MeetingController
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc
from tests.controllers.grpc.conftest import bearer, endpoint_token, running_server
from tests.factories import make_controller
from tests.faults.processes import wait_for

pytestmark = pytest.mark.usefixtures("fresh_revocation_lookups")


def register(controller_id: str, *, max_meetings: int = 10) -> pb.RegisterMCRequest:
    return pb.RegisterMCRequest(id=controller_id, region="us-east-1", grpc_endpoint="grpc://mc.internal:50052",
                                max_meetings=max_meetings, max_participants=100)


@contextlib.contextmanager
def meeting_controllers_locked() -> Iterator[None]:
    """meeting_controllers locked against writes by another connection's open transaction, committed when the
    block ends: the writes the block starts wait for it."""
    locker = connections.create_connection("default")
    try:
        with locker.cursor() as cursor:
            cursor.execute("BEGIN")
            cursor.execute("LOCK TABLE meeting_controllers IN SHARE ROW EXCLUSIVE MODE")
            yield
            cursor.execute("COMMIT")
    finally:
        locker.close()


@pytest.fixture
def one_worker_server(transactional_db) -> Iterator[GrpcServer]:
    """A server with a single worker thread."""
    with running_server(workers=1) as server:
        yield server


@pytest.fixture
def stub(one_worker_server) -> Iterator[internal_pb2_grpc.GlobalControllerServiceStub]:
    with grpc.insecure_channel(f"127.0.0.1:{one_worker_server.port}") as channel:
        yield internal_pb2_grpc.GlobalControllerServiceStub(channel)


@pytest.fixture
def token(one_worker_server, service_credential):
    return bearer(endpoint_token(service_credential))


def transactions_of(table: str, column: str, like: str, where: str = "true") -> list[int]:
    """How many rows of `table` each transaction wrote (rows written by one transaction share its xmin)."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"SELECT count(*) FROM {table} WHERE {column} LIKE %s AND {where} GROUP BY xmin::text ORDER BY 1",
            [like],
        )
        return [row[0] for row in cursor.fetchall()]


def waiting_for_lock(table: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks l JOIN pg_class c ON c.oid = l.relation "
            "WHERE NOT l.granted AND c.relname = %s", [table],
        )
        return cursor.fetchone()[0] > 0


def worker_call_answered(stub: internal_pb2_grpc.GlobalControllerServiceStub, token) -> bool:
    """Whether a call that needs a worker thread (a meeting end, for a meeting nobody knows) is answered in time."""
    request = pb.NotifyMeetingEndedRequest(meeting_id="00000000-0000-4000-8000-000000000001", region="us-east-1")
    try:
        stub.NotifyMeetingEnded(request, metadata=token, timeout=5)
    except grpc.RpcError as error:
        return error.code() == grpc.StatusCode.NOT_FOUND
    return True


def test_registrations_waiting_for_the_database_hold_no_worker_and_commit_together(one_worker_server, stub, token):
    stub.RegisterMC(register("mc-batch-warm"), metadata=token, timeout=10)  # the token is verified and cached
    with meeting_controllers_locked():
        calls = [stub.RegisterMC.future(register(f"mc-batch-{number:03d}"), metadata=token, timeout=60)
                 for number in range(100)]
        wait_for(lambda: waiting_for_lock("meeting_controllers"), timeout=10, what="a registration's write waiting")
        # The only worker thread is free: a call that needs one is served while 100 registrations wait.
        assert worker_call_answered(stub, token)
        wait_for(lambda: one_worker_server.service_guard.admission.waiting == 100, timeout=10,
                 what="every registration waiting")
        assert not any(call.done() for call in calls)

    assert all(call.result(timeout=30).accepted for call in calls)
    # The one that reached the writer first, then the 99 that waited meanwhile: two transactions, not 100.
    assert transactions_of("meeting_controllers", "controller_id", "mc-batch-0%") == [1, 99]
    assert transactions_of("controller_health_transitions", "component_id", "mc-batch-0%") == [1, 99]
    assert transactions_of("audit_logs", "target_id", "mc-batch-0%") == [1, 99]
    assert transactions_of("outbox_events", "aggregate_id", "mc-batch-0%") == [1, 99]


def test_a_refused_registration_fails_alone_in_its_write(one_worker_server, stub, token):
    make_controller(controller_id="mc-batch-other", owner_client_id="svc-someone-else")
    stub.RegisterMC(register("mc-batch-warm"), metadata=token, timeout=10)
    with meeting_controllers_locked():
        first = stub.RegisterMC.future(register("mc-batch-first"), metadata=token, timeout=60)
        wait_for(lambda: waiting_for_lock("meeting_controllers"), timeout=10, what="the first write waiting")
        calls = {
            name: stub.RegisterMC.future(register(name), metadata=token, timeout=60)
            for name in ("mc-batch-a", "mc-batch-other", "mc-batch-b")
        }
        wait_for(lambda: one_worker_server.service_guard.admission.waiting == 4, timeout=10,
                 what="every registration waiting")

    assert first.result(timeout=30).accepted
    assert calls["mc-batch-a"].result(timeout=30).accepted
    assert calls["mc-batch-b"].result(timeout=30).accepted
    with pytest.raises(grpc.RpcError) as refused:
        calls["mc-batch-other"].result(timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    # Written in one transaction with its refusal's audit row; the other credential's member unchanged.
    assert transactions_of("meeting_controllers", "controller_id", "mc-batch-_") == [2]
    assert AuditLog.objects.filter(target_id="mc-batch-other", result="failure").count() == 1
    assert MeetingController.objects.get(pk="mc-batch-other").owner_client_id == "svc-someone-else"


def test_first_beats_waiting_for_the_database_hold_no_worker_and_commit_together(one_worker_server, stub, token):
    for number in range(50):
        stub.RegisterMC(register(f"mc-beat-{number:03d}"), metadata=token, timeout=10)
    with meeting_controllers_locked():
        beats = [stub.FastHeartbeat.future(pb.FastHeartbeatRequest(controller_id=f"mc-beat-{number:03d}",
                                                                   health=pb.HEALTHY), metadata=token, timeout=60)
                 for number in range(50)]
        wait_for(lambda: waiting_for_lock("meeting_controllers"), timeout=10, what="a first beat's write waiting")
        assert worker_call_answered(stub, token)
        wait_for(lambda: one_worker_server.service_guard.admission.waiting == 50, timeout=10,
                 what="every first beat waiting")

    assert all(beat.result(timeout=30).acknowledged for beat in beats)
    assert MeetingController.objects.filter(controller_id__startswith="mc-beat-",
                                            health_status=HealthStatus.HEALTHY).count() == 50
    assert HealthTransition.objects.filter(component_id__startswith="mc-beat-", reason="heartbeat").count() == 50
    assert transactions_of("controller_health_transitions", "component_id", "mc-beat-%", "reason = 'heartbeat'") == [
        1, 49
    ]
    # Each first beat announces its MC healthy, in the transaction that wrote its transition.
    assert transactions_of("outbox_events", "aggregate_id", "mc-beat-%", "event_type = 'controller_healthy'") == [
        1, 49
    ]


def test_calls_waiting_for_a_writer_are_admitted_up_to_the_limit_and_the_next_is_refused_with_a_retry_after(
    one_worker_server, stub, token, settings
):
    settings.GRPC_MAX_QUEUED_CALLS = 3
    stub.RegisterMC(register("mc-batch-warm"), metadata=token, timeout=10)
    with meeting_controllers_locked():
        admitted = [stub.RegisterMC.future(register(f"mc-batch-{number}"), metadata=token, timeout=60)
                    for number in range(3)]
        wait_for(lambda: one_worker_server.service_guard.admission.waiting == 3, timeout=10,
                 what="three registrations waiting")
        with pytest.raises(grpc.RpcError) as refused:
            stub.RegisterMC(register("mc-batch-3"), metadata=token, timeout=10)

    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert int(dict(refused.value.trailing_metadata())["retry-after"]) >= 1
    assert [call.result(timeout=30).accepted for call in admitted] == [True, True, True]
    assert not MeetingController.objects.filter(pk="mc-batch-3").exists()
    assert stub.RegisterMC(register("mc-batch-3"), metadata=token, timeout=10).accepted


def test_the_registrations_of_one_write_are_counted_by_the_rate_limits_each(one_worker_server, stub, token, settings):
    settings.GRPC_RATE_LIMIT_REGISTER_PER_MEMBER = 1
    stub.RegisterMC(register("mc-batch-warm"), metadata=token, timeout=10)
    with meeting_controllers_locked():
        first = stub.RegisterMC.future(register("mc-batch-first"), metadata=token, timeout=60)
        wait_for(lambda: waiting_for_lock("meeting_controllers"), timeout=10, what="the first write waiting")
        calls = [stub.RegisterMC.future(register(name), metadata=token, timeout=60)
                 for name in ("mc-batch-a", "mc-batch-a", "mc-batch-b")]
        wait_for(lambda: one_worker_server.service_guard.admission.waiting == 4, timeout=10,
                 what="every registration waiting")

    assert first.result(timeout=30).accepted
    assert calls[2].result(timeout=30).accepted
    # The same member twice in one write: one is registered, the other over the member's limit.
    errors = [call.exception(timeout=30) for call in calls[:2]]
    assert errors.count(None) == 1
    limited = next(error for error in errors if error is not None)
    assert limited.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert int(dict(limited.trailing_metadata())["retry-after"]) >= 1
