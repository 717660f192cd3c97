"""A Celery worker killed with SIGKILL in the middle of the stale sweep leaves no half state.

The sweep is one transaction: its marking statement (the state changes with their transitions) runs, then it
writes its audit and outbox rows. The test holds a SHARE lock on audit_logs, so the sweep stops right there,
marked but not committed; the worker dies; the lock goes. Nothing of that sweep may remain: no controller
unhealthy without its transition and audit row (here: none changed at all), and the next sweep does the whole
job, every change with its rows.
"""

from __future__ import annotations

from datetime import timedelta

import psycopg
import pytest
from django.utils import timezone

from audit.models import AuditLog, OutboxEvent
from controllers.models import HealthStatus, HealthTransition, MeetingController
from controllers.services.health import controllers_sweep_stale
from tests.factories import make_controller
from tests.faults.processes import connections_named, conninfo_of_test_db, wait_for

# One xdist worker runs the fault, load and bench tests, one at a time (make test's --dist loadgroup): each
# starts several servers and fleets of its own, and a module's throwaway servers are started once.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("processes")]

SWEEP = "controllers.tasks.sweep_stale"
STALE = 5


def _blocked_on_audit(conninfo, application_name: str) -> bool:
    with psycopg.connect(**conninfo) as conn:
        return bool(conn.execute(
            "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock' "
            "AND state = 'active' AND query ILIKE 'INSERT INTO \"audit_logs\"%%'",
            [application_name],
        ).fetchone())


def _state(ids: list[str]) -> tuple[dict[str, str], int, int, int]:
    return (
        dict(MeetingController.objects.filter(pk__in=ids).values_list("controller_id", "health_status")),
        HealthTransition.objects.filter(component_id__in=ids).count(),
        AuditLog.objects.filter(target_id__in=ids).count(),
        OutboxEvent.objects.filter(aggregate_id__in=ids).count(),
    )


def test_a_worker_killed_mid_sweep_leaves_no_half_state(worker_on_own_redis, send_task):
    stale_since = timezone.now() - timedelta(hours=1)
    ids = [make_controller(region="kill-1", last_heartbeat_at=stale_since).controller_id for _ in range(STALE)]
    assert _state(ids) == ({key: HealthStatus.HEALTHY for key in ids}, 0, 0, 0)
    conninfo = conninfo_of_test_db()
    worker = worker_on_own_redis

    with psycopg.connect(**{**conninfo, "autocommit": False}) as locker:
        locker.execute("LOCK TABLE audit_logs IN SHARE MODE")  # INSERTs wait; the sweep's reads do not
        send_task(SWEEP)
        wait_for(lambda: _blocked_on_audit(conninfo, worker.application_name), timeout=45,
                 what="the sweep to mark and then wait to write its audit rows", log=worker.log)
        # The marking statement ran in the sweep's transaction: the rows are locked by it.
        assert locker.execute(
            "SELECT controller_id FROM meeting_controllers WHERE controller_id = ANY(%s) FOR UPDATE SKIP LOCKED", [ids]
        ).fetchall() == []
        worker.kill()
        locker.rollback()

    # The server notices the dead client once the lock is gone; until then the transaction is still open.
    wait_for(lambda: connections_named(conninfo, worker.application_name) == 0, timeout=30,
             what="the killed worker's backend to end", log=worker.log)
    assert _state(ids) == ({key: HealthStatus.HEALTHY for key in ids}, 0, 0, 0)

    result = controllers_sweep_stale()
    assert sorted(row.id for row in result.marked) == sorted(ids)
    assert _state(ids) == ({key: HealthStatus.UNHEALTHY for key in ids}, STALE, STALE, STALE)
