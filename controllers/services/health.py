"""The stale-heartbeat sweep: controllers and media handlers that stopped reporting become unhealthy.

Staleness is judged by the database's clock (`now()`, the sweep transaction's start) against
`last_heartbeat_at`, which heartbeats also set from the database's clock, so no host's clock is involved.

Per table, one statement finds the stale rows (locking them, skipping rows a heartbeat holds right now),
counts each affected region's live fleet, and marks the stale rows of every region that is not disrupted,
returning each row's previous state. A region is disrupted when more than DISRUPTION_MAX_STALE_SHARE of
its live members went stale at once and it has at least DISRUPTION_MIN_REGION_SIZE of them: that looks
like a network partition or a fault on our side, not like that many machines dying, so (as Kubernetes'
node lifecycle controller does) nobody there is marked and an operator is told.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.models.functions import Now

from audit.models import AuditLog, AuditResult
from audit.services import AuditEntry, audit_record_many, outbox_enqueue_many
from controllers.models import LIVE_STATES, HealthStatus

logger = logging.getLogger(__name__)

# Two sweeps at once (two beats by mistake, a manual run beside the beat) would each see only the rows the
# other has not locked, and each could stay under the disruption share while together they evict a region.
# One sweep at a time; the other returns at once and the next tick tries again.
_SWEEP_LOCK_SQL = "SELECT pg_try_advisory_xact_lock(hashtext('controllers_sweep_stale'))"

# A disruption lasts many sweeps; the log says so every sweep, the audit trail once per this many seconds.
DISRUPTION_AUDIT_REPEAT_SECONDS = 300


@dataclass(frozen=True)
class SweepTarget:
    """One swept table and the names it goes by in audit rows and outbox events."""

    table: str
    pk: str
    target_type: str
    aggregate_type: str
    event_type: str


MEETING_CONTROLLERS = SweepTarget(
    table="meeting_controllers", pk="controller_id", target_type="meeting_controller",
    aggregate_type="controller", event_type="controller_unhealthy",
)
MEDIA_HANDLERS = SweepTarget(
    table="media_handlers", pk="handler_id", target_type="media_handler",
    aggregate_type="media_handler", event_type="media_handler_unhealthy",
)
SWEEP_TARGETS = (MEETING_CONTROLLERS, MEDIA_HANDLERS)


@dataclass(frozen=True)
class MarkedUnhealthy:
    target_type: str
    id: str
    region: str
    from_status: str
    last_heartbeat_at: datetime


@dataclass(frozen=True)
class DisruptedRegion:
    target_type: str
    region: str
    stale: int
    live: int


@dataclass
class SweepResult:
    marked: list[MarkedUnhealthy] = field(default_factory=list)
    disrupted: list[DisruptedRegion] = field(default_factory=list)
    # Another sweep held the lock: this one did nothing.
    skipped: bool = False
    dry_run: bool = False

    def ids(self, target_type: str) -> list[str]:
        return [row.id for row in self.marked if row.target_type == target_type]


def stale_thresholds() -> dict[str, int]:
    """Seconds without a heartbeat after which a member in each live state is stale.

    One threshold for every state today; a state with its own (a startup grace for `pending`) only
    changes this mapping: the sweep statement applies each state's value.
    """
    return {state: settings.HEARTBEAT_STALE_THRESHOLD_SECONDS for state in LIVE_STATES}


# {table} and {pk} come from SweepTarget constants, never from input. The first bound on last_heartbeat_at
# (the smallest threshold) is what lets the planner range-scan an index on last_heartbeat_at; the CASE
# then applies each state's own threshold. The live count runs only for regions that have stale rows.
_SWEEP_SQL = """
WITH candidates AS (
    SELECT {pk} AS id, region, health_status AS from_status, last_heartbeat_at
    FROM {table}
    WHERE health_status = ANY(%(live_states)s)
      AND last_heartbeat_at < now() - make_interval(secs => %(min_threshold)s)
      AND last_heartbeat_at < now() - make_interval(secs => CASE health_status {threshold_cases} END)
    FOR UPDATE SKIP LOCKED
),
stale_by_region AS (
    SELECT region, count(*) AS stale FROM candidates GROUP BY region
),
region_stats AS (
    SELECT s.region, s.stale, live.n AS live,
           live.n >= %(min_region_size)s AND s.stale > live.n * %(max_share)s AS disrupted
    FROM stale_by_region s
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM {table} member
        WHERE member.region = s.region AND member.health_status = ANY(%(live_states)s)
    ) live
),
marked AS (
    UPDATE {table} swept SET health_status = %(unhealthy)s
    FROM candidates c JOIN region_stats r ON r.region = c.region
    WHERE swept.{pk} = c.id AND NOT r.disrupted
    RETURNING swept.{pk} AS id, swept.region, c.from_status, c.last_heartbeat_at
)
SELECT 'marked', id, region, from_status, last_heartbeat_at, NULL::bigint, NULL::bigint FROM marked
UNION ALL
SELECT 'disrupted', NULL, region, NULL, NULL, stale, live FROM region_stats WHERE disrupted
"""


def _sweep_statement(target: SweepTarget, thresholds: dict[str, int]) -> tuple[str, dict[str, object]]:
    params: dict[str, object] = {
        "live_states": [str(state) for state in thresholds],
        "min_threshold": min(thresholds.values()),
        "min_region_size": settings.DISRUPTION_MIN_REGION_SIZE,
        "max_share": settings.DISRUPTION_MAX_STALE_SHARE,
        "unhealthy": str(HealthStatus.UNHEALTHY),
    }
    cases = []
    for number, (state, seconds) in enumerate(thresholds.items()):
        params[f"state_{number}"] = str(state)
        params[f"seconds_{number}"] = seconds
        cases.append(f"WHEN %(state_{number})s THEN %(seconds_{number})s")
    sql = _SWEEP_SQL.format(table=target.table, pk=target.pk, threshold_cases=" ".join(cases))
    return sql, params


def controllers_sweep_stale(*, dry_run: bool = False) -> SweepResult:
    """Mark stale controllers and media handlers unhealthy, region by region unless a region is disrupted.

    One transaction: the state changes, one audit row and one outbox event per transition, and a
    `region_disrupted` audit row per disrupted region (at most one per DISRUPTION_AUDIT_REPEAT_SECONDS)
    commit together. `dry_run` runs the same statements
    and rolls them back, so it reports exactly what a real sweep would have done at that moment.
    """
    result = SweepResult(dry_run=dry_run)
    thresholds = stale_thresholds()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_SWEEP_LOCK_SQL)
        if not cursor.fetchone()[0]:
            result.skipped = True
            logger.info("stale sweep skipped: another sweep is running")
            return result
        for target in SWEEP_TARGETS:
            sql, params = _sweep_statement(target, thresholds)
            cursor.execute(sql, params)
            for kind, row_id, region, from_status, last_heartbeat_at, stale, live in cursor.fetchall():
                if kind == "marked":
                    result.marked.append(
                        MarkedUnhealthy(target.target_type, row_id, region, from_status, last_heartbeat_at)
                    )
                else:
                    result.disrupted.append(DisruptedRegion(target.target_type, region, stale, live))
        _record(result, thresholds)
        if dry_run:
            transaction.set_rollback(True)
    _log(result)
    return result


def _record(result: SweepResult, thresholds: dict[str, int]) -> None:
    targets = {target.target_type: target for target in SWEEP_TARGETS}
    entries = [
        AuditEntry(
            event_type=targets[row.target_type].event_type,
            action="mark_unhealthy",
            target_type=row.target_type,
            target_id=row.id,
            metadata={
                "reason": "heartbeat_stale",
                "from_status": row.from_status,
                "to_status": HealthStatus.UNHEALTHY,
                "region": row.region,
                "last_heartbeat_at": row.last_heartbeat_at.isoformat(),
                "threshold_seconds": thresholds[row.from_status],
            },
        )
        for row in result.marked
    ]
    entries += [
        AuditEntry(
            event_type="region_disrupted",
            action="stale_sweep",
            result=AuditResult.FAILURE,
            target_type="region",
            target_id=row.region,
            error_message="too many stale at once; none marked in this region",
            metadata={
                "member_type": row.target_type,
                "stale": row.stale,
                "live": row.live,
                "max_stale_share": settings.DISRUPTION_MAX_STALE_SHARE,
                "min_region_size": settings.DISRUPTION_MIN_REGION_SIZE,
            },
        )
        for row in _newly_disrupted(result.disrupted)
    ]
    audit_record_many(entries)
    outbox_enqueue_many(
        (
            targets[row.target_type].aggregate_type,
            row.id,
            targets[row.target_type].event_type,
            {
                "id": row.id,
                "region": row.region,
                "from_status": row.from_status,
                "to_status": HealthStatus.UNHEALTHY,
                "reason": "heartbeat_stale",
                "last_heartbeat_at": row.last_heartbeat_at.isoformat(),
            },
        )
        for row in result.marked
    )


def _newly_disrupted(disrupted: list[DisruptedRegion]) -> list[DisruptedRegion]:
    """The disrupted regions without a region_disrupted audit row in the last DISRUPTION_AUDIT_REPEAT_SECONDS."""
    if not disrupted:
        return []
    recent = set(
        AuditLog.objects.filter(
            event_type="region_disrupted",
            target_type="region",
            target_id__in={row.region for row in disrupted},
            created_at__gte=Now() - timedelta(seconds=DISRUPTION_AUDIT_REPEAT_SECONDS),
        ).values_list("target_id", "metadata__member_type")
    )
    return [row for row in disrupted if (row.region, row.target_type) not in recent]


def _log(result: SweepResult) -> None:
    verb = "would mark" if result.dry_run else "marked"
    for row in result.disrupted:
        logger.error(
            "region %s disrupted: %d of %d live %ss are stale at once; none marked there",
            row.region, row.stale, row.live, row.target_type,
        )
    for target in SWEEP_TARGETS:
        ids = result.ids(target.target_type)
        if ids:
            logger.info("stale sweep %s %d %s(s) unhealthy: %s", verb, len(ids), target.target_type, ", ".join(ids))
