"""The stale-heartbeat sweep and the hold-down: who becomes unhealthy, and when an unhealthy member may return.

Staleness is judged by the database's clock (`now()`, the sweep transaction's start) against
`last_heartbeat_at`, which heartbeats also set from the database's clock, so no host's clock is involved.
Each live state has its own threshold (`stale_thresholds`): `pending` members, which have not sent a good
heartbeat since they registered, get PENDING_STARTUP_GRACE_SECONDS (Kubernetes' node-startup-grace-period).

Per table, one statement finds the stale rows (locking them, skipping rows a heartbeat holds right now) and
counts each affected region's live fleet. A region is disrupted when more than DISRUPTION_MAX_STALE_SHARE of
its live members went stale at once and it has at least DISRUPTION_MIN_REGION_SIZE of them: that looks like a
network partition or a fault on our side, not like that many machines dying, so (as Kubernetes' node lifecycle
controller does) nobody there is marked and an operator is told. When a region is disrupted and the GC hears
no region at all, of any size and in either table (in each, more than that share of the live members are stale),
the GC itself is cut off: nobody is marked anywhere and an error-level event is raised. Each member the guard
spared gets a `disruption-guard` transition (from = to = its state, which the table's CHECK admits for this hold
reason), written when the region's `region_disrupted` audit row is (once per DISRUPTION_AUDIT_REPEAT_SECONDS, not
every sweep of a long disruption).
A second statement marks the rest and writes their transitions (reason `stale`) in the same statement.

The sweep must not punish members for its own absence: when it has not run for more than
SWEEP_GAP_INTERVALS intervals (worker down, beat stopped, database away), the first sweep after the gap marks
nobody; it grants every live member a fresh grace period (staleness then counts from the later of its last
heartbeat and this moment, kept in controller_sweep_state.grace_from; last_heartbeat_at is never faked), writes
a `sweep-gap` transition for each member it spared, an audit row, and a warning.

Hold-down (Jitsi's failure-reset threshold): an unhealthy member returns only through `heartbeat_recovery`, after
UNHEALTHY_HOLD_DOWN_SECONDS since `unhealthy_since` and UNHEALTHY_RECOVERY_HEARTBEATS good heartbeats. When a
recovering member falls silent again for the stale threshold, the sweep restarts its hold-down and its count, so
heartbeats that stop and start around the threshold never toggle its state.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.conf import settings
from django.db import connection, transaction
from django.db.backends.utils import CursorWrapper
from django.db.models.functions import Now

from audit.models import AuditLog, AuditResult
from audit.services import AuditEntry, audit_record, audit_record_many, outbox_enqueue_many
from controllers.health_rules import (
    RECOVERABLE_REPORTS,
    RECOVERY_COUNT_SQL,
    RECOVERY_HELD_SQL,
    RECOVERY_REASON_SQL,
    RECOVERY_SET_STATUS_SQL,
    RECOVERY_WHERE_SQL,
    stale_thresholds,
)
from controllers.members import MEMBER_KINDS, HealthChange, MemberKind
from controllers.models import HealthStatus, TransitionReason
from controllers.services.transitions import changed_cte_sql

logger = logging.getLogger(__name__)

# Two sweeps at once (two beats by mistake, a manual run beside the beat) would each see only the rows the
# other has not locked, and each could stay under the disruption share while together they evict a region.
# One sweep at a time; the other returns at once and the next tick tries again.
_SWEEP_LOCK_SQL = "SELECT pg_try_advisory_xact_lock(hashtext('controllers_sweep_stale'))"

# A disruption lasts many sweeps; the log says so every sweep, the audit trail once per this many seconds.
DISRUPTION_AUDIT_REPEAT_SECONDS = 300

# The first sweep after more than this many intervals without one marks nobody.
SWEEP_GAP_INTERVALS = 3


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


@dataclass(frozen=True)
class SweepGap:
    """The sweep had not run for `seconds` (None: no record of an earlier sweep is not a gap, see _sweep_gap)."""

    seconds: float
    last_run_at: datetime
    spared: dict[str, int]


@dataclass
class SweepResult:
    marked: list[MarkedUnhealthy] = field(default_factory=list)
    disrupted: list[DisruptedRegion] = field(default_factory=list)
    # A region was disrupted and no region of any size, in either table, was heard from: the GC is cut off,
    # nobody was marked anywhere.
    cut_off: bool = False
    gap: SweepGap | None = None
    # Unhealthy members whose recovery restarted because they fell silent again, per target type.
    hold_down_restarted: dict[str, int] = field(default_factory=dict)
    # Stale members the guard spared that got a disruption-guard transition this sweep, per target type.
    guarded: dict[str, int] = field(default_factory=dict)
    # Another sweep held the lock: this one did nothing.
    skipped: bool = False
    dry_run: bool = False

    def ids(self, target_type: str) -> list[str]:
        return [row.id for row in self.marked if row.target_type == target_type]


# {table} and {pk} come from MemberKind constants, never from input. The first bound on last_heartbeat_at
# (the smallest threshold) is what lets the planner range-scan an index on last_heartbeat_at; the CASE
# then applies each state's own threshold to the later of the last heartbeat and the grace granted after a
# sweep gap (greatest() ignores a NULL grace_from). The live count runs only for regions that have stale rows.
_STALE_SQL = """
    SELECT {pk} AS id, region, health_status AS from_status, last_heartbeat_at
    FROM {table}
    WHERE health_status = ANY(%(live_states)s)
      AND last_heartbeat_at < now() - make_interval(secs => %(min_threshold)s)
      AND greatest(last_heartbeat_at, %(grace_from)s::timestamptz)
          < now() - make_interval(secs => CASE health_status {threshold_cases} END)
"""

_CANDIDATES_SQL = """
WITH candidates AS (
    {stale}
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
)
SELECT 'candidate', c.id, NULL::bigint, NULL::bigint FROM candidates c
JOIN region_stats r ON r.region = c.region AND NOT r.disrupted
UNION ALL
SELECT 'disrupted', region, stale, live FROM region_stats WHERE disrupted
"""

# Whether the GC still hears a region of this table: one, of any size, where at most DISRUPTION_MAX_STALE_SHARE
# of the live members are stale (the per-region guard's share, without its minimum size). Read only when a region
# is disrupted, to tell "one region went dark" from "we are cut off from everyone". Locks nothing: a member whose
# heartbeat holds its row right now counts as stale here, which can only make the sweep more careful.
_HEARD_FROM_SQL = """
SELECT EXISTS (
    SELECT 1 FROM {table} member
    LEFT JOIN ({stale}) stale ON stale.id = member.{pk}
    WHERE member.health_status = ANY(%(live_states)s)
    GROUP BY member.region
    HAVING count(stale.id) <= count(*) * %(max_share)s
)
"""

# The candidates are locked by this transaction since _CANDIDATES_SQL; the snapshot's FOR UPDATE re-takes
# those locks and reads the state each one leaves.
_MARK_SQL = "WITH {ctes} SELECT id, region, from_status, last_heartbeat_at FROM changed"

# The stale members of the regions the guard protected (all of them when the GC is cut off), recorded as held.
_GUARD_SQL = """
INSERT INTO controller_health_transitions
    (component_type, component_id, region, from_status, to_status, reason, actor_type, metadata)
SELECT %(component_type)s, id, region, from_status, from_status, %(reason)s, 'system',
       jsonb_build_object('last_heartbeat_at', last_heartbeat_at, 'cut_off', %(cut_off)s)
       || coalesce(%(region_stats)s::jsonb -> region, '{{}}'::jsonb)
FROM ({stale}) guarded
WHERE %(cut_off)s OR region = ANY(%(regions)s)
"""

_SPARE_SQL = """
INSERT INTO controller_health_transitions
    (component_type, component_id, region, from_status, to_status, reason, actor_type, metadata)
SELECT %(component_type)s, id, region, from_status, from_status, %(reason)s, 'system',
       jsonb_build_object('last_heartbeat_at', last_heartbeat_at, 'gap_seconds', %(gap_seconds)s)
FROM ({stale}) spared
"""

# Served by the partial index idx_*_recovering: only unhealthy members that began recovering.
_RESTART_HOLD_DOWN_SQL = """
UPDATE {table} SET good_heartbeats = 0, unhealthy_since = now()
WHERE health_status = 'unhealthy' AND good_heartbeats > 0
  AND last_heartbeat_at < now() - make_interval(secs => %(threshold)s)
"""


# The sweep statements' parameters (psycopg adapts each value).
_SweepParams = dict[str, list[str] | int | float | str | datetime | None]


def _stale_params(thresholds: dict[str, int], grace_from: datetime | None) -> tuple[str, _SweepParams]:
    params: _SweepParams = {
        "live_states": [str(state) for state in thresholds],
        "min_threshold": min(thresholds.values()),
        "grace_from": grace_from,
        "min_region_size": settings.DISRUPTION_MIN_REGION_SIZE,
        "max_share": settings.DISRUPTION_MAX_STALE_SHARE,
    }
    cases = []
    for number, (state, seconds) in enumerate(thresholds.items()):
        params[f"state_{number}"] = str(state)
        params[f"seconds_{number}"] = seconds
        cases.append(f"WHEN %(state_{number})s THEN %(seconds_{number})s")
    return " ".join(cases), params


def controllers_sweep_stale(*, dry_run: bool = False) -> SweepResult:
    """Mark stale controllers and media handlers unhealthy, region by region unless a region is disrupted.

    One transaction: the state changes with their transitions, one audit row and one outbox event per
    transition, a `region_disrupted` audit row per disrupted region (at most one per
    DISRUPTION_AUDIT_REPEAT_SECONDS), the sweep-gap and cut-off records, and the sweep's own last-run time
    commit together. `dry_run` runs the same statements and rolls them back, so it reports exactly what a real
    sweep would have done at that moment.
    """
    result = SweepResult(dry_run=dry_run)
    thresholds = stale_thresholds()
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(_SWEEP_LOCK_SQL)
        if not cursor.fetchone()[0]:
            result.skipped = True
            logger.info("stale sweep skipped: another sweep is running")
            return result
        gap_seconds, last_run_at, grace_from = _sweep_gap(cursor)
        cases, params = _stale_params(thresholds, grace_from)
        if gap_seconds is not None and last_run_at is not None:
            result.gap = _grant_grace(cursor, cases, params, gap_seconds, last_run_at)
        else:
            _sweep(cursor, result, thresholds, cases, params)
            newly_disrupted = _newly_disrupted(result.disrupted)
            _record_guarded(cursor, result, newly_disrupted, cases, params)
            _record(result, thresholds, newly_disrupted)
        if dry_run:
            transaction.set_rollback(True)
    _log(result)
    return result


def _sweep_gap(cursor: CursorWrapper) -> tuple[float | None, datetime | None, datetime | None]:
    """Stamp this sweep's run; return (gap seconds or None, previous run, grace_from in force).

    No row means no sweep has ever committed: there is no earlier run to measure a gap from, and on a fresh
    install nothing to spare. Locked FOR UPDATE under the advisory lock, so the read and the stamp are one step.
    """
    cursor.execute("SELECT last_run_at, grace_from, extract(epoch FROM now() - last_run_at) "
                   "FROM controller_sweep_state WHERE id = 1 FOR UPDATE")
    row = cursor.fetchone()
    gap_limit = SWEEP_GAP_INTERVALS * settings.STALE_SWEEP_INTERVAL_SECONDS
    if row is None:
        cursor.execute("INSERT INTO controller_sweep_state (id, last_run_at) VALUES (1, now())")
        return None, None, None
    last_run_at, grace_from, elapsed = row
    if elapsed > gap_limit:
        cursor.execute("UPDATE controller_sweep_state SET last_run_at = now(), grace_from = now() WHERE id = 1 "
                       "RETURNING grace_from")
        return float(elapsed), last_run_at, cursor.fetchone()[0]
    cursor.execute("UPDATE controller_sweep_state SET last_run_at = now() WHERE id = 1")
    return None, last_run_at, grace_from


def _grant_grace(
    cursor: CursorWrapper, cases: str, params: _SweepParams, gap_seconds: float, last_run_at: datetime
) -> SweepGap:
    """The first sweep after a gap: nobody is marked. grace_from is already now() (see _sweep_gap); record a
    `sweep-gap` transition for each member that would have been stale without it, and one audit row."""
    spared: dict[str, int] = {}
    previous_grace = {**params, "grace_from": None}
    for kind in MEMBER_KINDS:
        stale = _STALE_SQL.format(table=kind.table, pk=kind.pk, threshold_cases=cases)
        cursor.execute(
            _SPARE_SQL.format(stale=stale),
            {**previous_grace, "component_type": kind.component_type, "reason": TransitionReason.SWEEP_GAP,
             "gap_seconds": round(gap_seconds, 3)},
        )
        spared[kind.target_type] = cursor.rowcount
    gap = SweepGap(seconds=gap_seconds, last_run_at=last_run_at, spared=spared)
    audit_record(
        event_type="stale_sweep_gap",
        action="stale_sweep",
        result=AuditResult.FAILURE,
        target_type="sweep",
        target_id="controllers_sweep_stale",
        error_message="the sweep had not run for too long; nobody marked, every live member granted a fresh grace",
        metadata={
            "gap_seconds": round(gap_seconds, 3),
            "last_run_at": last_run_at.isoformat(),
            "limit_seconds": SWEEP_GAP_INTERVALS * settings.STALE_SWEEP_INTERVAL_SECONDS,
            "spared": spared,
        },
    )
    return gap


def _sweep(
    cursor: CursorWrapper, result: SweepResult, thresholds: dict[str, int], cases: str, params: _SweepParams
) -> None:
    candidates: dict[str, list[str]] = {}
    for target in MEMBER_KINDS:
        stale = _STALE_SQL.format(table=target.table, pk=target.pk, threshold_cases=cases)
        cursor.execute(_CANDIDATES_SQL.format(stale=stale, table=target.table), params)
        ids = candidates.setdefault(target.target_type, [])
        for kind, value, stale_count, live in cursor.fetchall():
            if kind == "candidate":
                ids.append(value)
            else:
                result.disrupted.append(DisruptedRegion(target.target_type, value, stale_count, live))
    if result.disrupted:
        result.cut_off = not _hears_anyone(cursor, cases, params)
    for target in MEMBER_KINDS:
        cursor.execute(
            _RESTART_HOLD_DOWN_SQL.format(table=target.table),
            {"threshold": settings.HEARTBEAT_STALE_THRESHOLD_SECONDS},
        )
        if cursor.rowcount:
            result.hold_down_restarted[target.target_type] = cursor.rowcount
        ids = candidates[target.target_type]
        if result.cut_off or not ids:
            continue
        ctes = changed_cte_sql(
            target,
            where=f"t.{target.pk} = ANY(%(ids)s) AND t.health_status = ANY(%(live_states)s)",
            set_status="'unhealthy'",
            snapshot_columns=", t.last_heartbeat_at",
            returning=", s.last_heartbeat_at",
            metadata="jsonb_build_object('last_heartbeat_at', c.last_heartbeat_at, "
            "'threshold_seconds', %(thresholds)s::jsonb -> c.from_status)",
        )
        cursor.execute(
            _MARK_SQL.format(ctes=ctes),
            {
                "ids": ids, "live_states": params["live_states"], "thresholds": json.dumps(thresholds),
                "component_type": target.component_type, "reason": TransitionReason.STALE,
                "actor_type": "system", "actor_user_id": None,
            },
        )
        result.marked += [MarkedUnhealthy(target.target_type, *row) for row in cursor.fetchall()]


def _hears_anyone(cursor: CursorWrapper, cases: str, params: _SweepParams) -> bool:
    """Whether any region of either table, whatever its size, is still heard from (see _HEARD_FROM_SQL).

    The GC is cut off only when it hears (almost) nobody. Counting only the regions the guard can judge would
    call one big region going dark a cut-off while small regions keep beating, and a table with no such region
    (a fleet without media handlers) would agree vacuously: the silent members of every other region would then
    stay placeable for as long as the big region is dark.
    """
    for target in MEMBER_KINDS:
        stale = _STALE_SQL.format(table=target.table, pk=target.pk, threshold_cases=cases)
        cursor.execute(_HEARD_FROM_SQL.format(table=target.table, pk=target.pk, stale=stale), params)
        heard = cursor.fetchone()
        assert heard is not None  # an aggregate without GROUP BY: always one row
        if heard[0]:
            return True
    return False


def _record_guarded(
    cursor: CursorWrapper, result: SweepResult, newly_disrupted: list[DisruptedRegion], cases: str,
    params: _SweepParams,
) -> None:
    """A `disruption-guard` transition for each stale member the guard spared, with the region_disrupted row."""
    if not newly_disrupted:
        return
    for target in MEMBER_KINDS:
        regions = [row for row in newly_disrupted if row.target_type == target.target_type]
        if not regions and not result.cut_off:
            continue
        stale = _STALE_SQL.format(table=target.table, pk=target.pk, threshold_cases=cases)
        cursor.execute(_GUARD_SQL.format(stale=stale), {
            **params, "component_type": target.component_type, "reason": TransitionReason.DISRUPTION_GUARD,
            "cut_off": result.cut_off, "regions": [row.region for row in regions],
            "region_stats": json.dumps({
                row.region: {"region_stale": row.stale, "region_live": row.live}
                for row in result.disrupted if row.target_type == target.target_type
            }),
        })
        if cursor.rowcount:
            result.guarded[target.target_type] = cursor.rowcount


def _record(result: SweepResult, thresholds: dict[str, int], newly_disrupted: list[DisruptedRegion]) -> None:
    targets = {target.target_type: target for target in MEMBER_KINDS}
    entries = [
        AuditEntry(
            event_type=targets[row.target_type].event("unhealthy"),
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
        for row in newly_disrupted
    ]
    if result.cut_off and newly_disrupted:
        entries.append(
            AuditEntry(
                event_type="gc_cut_off",
                action="stale_sweep",
                result=AuditResult.FAILURE,
                target_type="sweep",
                target_id="controllers_sweep_stale",
                error_message="no region of any size is heard from; none marked anywhere",
                metadata={
                    "regions": sorted({row.region for row in result.disrupted}),
                    "stale": sum(row.stale for row in result.disrupted),
                    "live": sum(row.live for row in result.disrupted),
                },
            )
        )
    audit_record_many(entries)
    outbox_enqueue_many(
        (
            targets[row.target_type].aggregate_type,
            row.id,
            targets[row.target_type].event("unhealthy"),
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
    if result.gap is not None:
        logger.warning(
            "stale sweep had not run for %.1f s (since %s): nobody marked, every live member granted a fresh "
            "grace period; spared %s",
            result.gap.seconds, result.gap.last_run_at.isoformat(), result.gap.spared,
        )
    if result.cut_off:
        logger.error(
            "no region of any size is heard from (disrupted: %s): the GC looks cut off; none marked anywhere",
            ", ".join(sorted({row.region for row in result.disrupted})),
        )
    for row in result.disrupted:
        logger.error(
            "region %s disrupted: %d of %d live %ss are stale at once; none marked there",
            row.region, row.stale, row.live, row.target_type,
        )
    for kind in MEMBER_KINDS:
        ids = result.ids(kind.target_type)
        if ids:
            logger.info("stale sweep %s %d %s(s) unhealthy: %s", verb, len(ids), kind.target_type, ", ".join(ids))


@dataclass(frozen=True)
class RecoveryReport:
    """One good heartbeat of a batch: the member and the state it reported (healthy or degraded)."""

    id: str
    reported: str = HealthStatus.HEALTHY


def heartbeat_recovery(*, kind: MemberKind, reports: Sequence[RecoveryReport]) -> list[HealthChange]:
    """Apply a batch of good heartbeats to the members that are `pending` or `unhealthy`; others are untouched.

    - pending -> the reported state at once (reason `heartbeat`), unless held after re-registering inside a
      hold-down: then like unhealthy, with hold_down_until as the end of the hold-down (`hold-down-cleared`);
    - unhealthy: good_heartbeats + 1; -> the reported state (reason `hold-down-cleared`) once
      now() - unhealthy_since >= UNHEALTHY_HOLD_DOWN_SECONDS and good_heartbeats >= UNHEALTHY_RECOVERY_HEARTBEATS.
    One statement per batch, transitions included. Call it in the heartbeat flush's transaction for every
    heartbeat that reported HEALTHY or DEGRADED (duplicates of one member in a batch: pass it once). Returns
    every row it touched; `HealthChange.changed` tells the promoted ones.
    """
    batch = {report.id: report.reported for report in reports}
    if not batch:
        return []
    if any(reported not in RECOVERABLE_REPORTS for reported in batch.values()):
        raise ValueError("only healthy or degraded heartbeats recover a member")
    ctes = changed_cte_sql(
        kind,
        where=RECOVERY_WHERE_SQL.format(pk=kind.pk),
        snapshot_from=", unnest(%(ids)s::text[], %(reported)s::text[]) AS r(id, reported)",
        snapshot_columns=f", r.reported, t.good_heartbeats AS good_heartbeats_before, {RECOVERY_HELD_SQL} AS held",
        set_status=RECOVERY_SET_STATUS_SQL,
        extra_set=RECOVERY_COUNT_SQL,
        reason=RECOVERY_REASON_SQL,
        metadata="jsonb_build_object('good_heartbeats', c.good_heartbeats_before + 1)",
        returning=", s.good_heartbeats_before, s.held",
    )
    params: dict[str, list[str] | int | str | None] = {
        "ids": list(batch), "reported": [str(state) for state in batch.values()],
        "needed": settings.UNHEALTHY_RECOVERY_HEARTBEATS, "hold_down": settings.UNHEALTHY_HOLD_DOWN_SECONDS,
        "component_type": kind.component_type, "actor_type": "system", "actor_user_id": None,
    }
    with transaction.atomic(), connection.cursor() as cursor:
        sql = f"WITH {ctes} SELECT id, region, from_status, to_status FROM changed"  # noqa: S608 (constants only)
        cursor.execute(sql, params)
        return [HealthChange(*row) for row in cursor.fetchall()]
