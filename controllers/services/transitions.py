"""The health transition history: every change of a controller's or handler's health_status writes one row of
controller_health_transitions in the same statement (or, for callers that cannot, the same transaction).

Two ways in:
- `health_transition(...)`: a compare-and-set change of health_status whose transitions are inserted by the
  same statement: `WITH snapshot AS (SELECT ... FOR UPDATE), changed AS (UPDATE ... FROM snapshot RETURNING
  old and new state), recorded AS (INSERT INTO controller_health_transitions SELECT ... FROM changed)`.
  The snapshot's FOR UPDATE locks each row before the UPDATE reads it, so the `from` state returned is the
  state the UPDATE replaced, also under concurrent writers (PostgreSQL re-checks the WHERE on the newest row
  version). The sweep, heartbeat recovery and the drain job build their statements on the same pattern
  (`changed_cte_sql`).
- `transitions_record(transitions)`: one INSERT for a list of transitions a caller computed itself (registration's
  upsert knows the previous state from its own RETURNING). Call it inside the caller's transaction.

The bookkeeping columns (health_changed_at, unhealthy_since, good_heartbeats, drain columns) are kept by the
`*_health_bookkeeping` trigger whenever health_status changes; callers change health_status only.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection, transaction

from audit.models import ActorType
from controllers.members import HealthChange, MemberKind
from controllers.models import HealthStatus, TransitionReason
from darktower.db import RETENTION_BATCH_SIZE, delete_in_batches


@dataclass(frozen=True)
class Transition:
    component_type: str
    component_id: str
    region: str
    from_status: str | None
    to_status: str
    reason: str
    actor_type: str = ActorType.SYSTEM
    actor_user_id: uuid.UUID | None = None
    metadata: dict[str, Any] = field(default_factory=dict)


_INSERT_MANY_SQL = """
INSERT INTO controller_health_transitions
    (component_type, component_id, region, from_status, to_status, reason, actor_type, actor_user_id, metadata)
SELECT * FROM unnest(
    %(component_type)s::text[], %(component_id)s::text[], %(region)s::text[], %(from_status)s::text[],
    %(to_status)s::text[], %(reason)s::text[], %(actor_type)s::text[], %(actor_user_id)s::uuid[],
    %(metadata)s::jsonb[]
)
"""


def transitions_record(transitions: Iterable[Transition]) -> int:
    """Insert transitions in one statement; returns how many. Run it in the transaction of the change."""
    rows = list(transitions)
    if not rows:
        return 0
    columns: dict[str, list[Any]] = {
        name: [] for name in (
            "component_type", "component_id", "region", "from_status", "to_status", "reason", "actor_type",
            "actor_user_id", "metadata",
        )
    }
    for row in rows:
        for name, values in columns.items():
            value = getattr(row, name)
            values.append(json.dumps(value) if name == "metadata" else value)
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_MANY_SQL, columns)
    return len(rows)


# {table}, {pk}, {where}, {set_status}, {extra_set} and {reason} are constant SQL of this package, never input.
# `snapshot` may read other tables (the caller's {snapshot_from}); it must expose id, region and from_status.
_CHANGED_CTE_SQL = """
snapshot AS (
    SELECT t.{pk} AS id, t.region, t.health_status AS from_status{snapshot_columns}
    FROM {table} t{snapshot_from}
    WHERE {where}
    FOR UPDATE OF t
),
changed AS (
    UPDATE {table} t SET health_status = {set_status}{extra_set}
    FROM snapshot s
    WHERE t.{pk} = s.id
    RETURNING t.{pk} AS id, t.region, s.from_status, t.health_status AS to_status{returning}
),
recorded AS (
    INSERT INTO controller_health_transitions
        (component_type, component_id, region, from_status, to_status, reason, actor_type, actor_user_id, metadata)
    SELECT %(component_type)s, c.id, c.region, c.from_status, c.to_status, {reason}, %(actor_type)s,
           %(actor_user_id)s, {metadata}
    FROM changed c
    WHERE c.from_status IS DISTINCT FROM c.to_status
)
"""


def changed_cte_sql(
    kind: MemberKind, *, where: str, set_status: str, extra_set: str = "", snapshot_columns: str = "",
    snapshot_from: str = "", returning: str = "", reason: str = "%(reason)s",
    metadata: str = "%(metadata)s::jsonb",
) -> str:
    """The `snapshot, changed, recorded` CTEs of a health change that records its own transitions.

    Follow with `SELECT ... FROM changed`. Params: component_type, actor_type, actor_user_id, and those of the
    fragments (reason, metadata by default). Rows whose state does not change (a counter moved) are returned
    by `changed` but not recorded.
    """
    return _CHANGED_CTE_SQL.format(
        table=kind.table, pk=kind.pk, where=where, set_status=set_status, extra_set=extra_set,
        snapshot_columns=snapshot_columns, snapshot_from=snapshot_from, returning=returning, reason=reason,
        metadata=metadata,
    )


def health_transition(
    *,
    kind: MemberKind,
    ids: Sequence[str],
    from_states: Sequence[str],
    to_status: str,
    reason: str,
    actor_type: str = ActorType.SYSTEM,
    actor_user_id: uuid.UUID | None = None,
    metadata: dict[str, Any] | None = None,
) -> list[HealthChange]:
    """Move the rows of `ids` that are in one of `from_states` to `to_status`, recording each transition.

    Compare-and-set: rows in another state are left alone and not returned, so the caller learns from the
    result whether it won (e.g. an operator's mark-unhealthy racing the sweep). One statement, in its own
    transaction unless the caller has one open. For operators: actor_type="user", actor_user_id=...,
    reason="operator".
    """
    if to_status not in HealthStatus.values or reason not in TransitionReason.values:
        raise ValueError(f"unknown health state {to_status!r} or reason {reason!r}")
    sql = "WITH " + changed_cte_sql(  # noqa: S608 -- constants of this module and MemberKind, no input
        kind,
        where=f"t.{kind.pk} = ANY(%(ids)s) AND t.health_status = ANY(%(from_states)s) "
        "AND t.health_status <> %(to_status)s",
        set_status="%(to_status)s",
    ) + "SELECT id, region, from_status, to_status FROM changed"
    params = {
        "ids": list(ids), "from_states": [str(state) for state in from_states], "to_status": str(to_status),
        "component_type": kind.component_type, "reason": str(reason), "actor_type": str(actor_type),
        "actor_user_id": actor_user_id, "metadata": json.dumps(metadata or {}),
    }
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(sql, params)
        return [HealthChange(*row) for row in cursor.fetchall()]


def health_transitions_prune(*, dry_run: bool = False, batch_size: int = RETENTION_BATCH_SIZE) -> int:
    """Delete transitions older than RETENTION_HEALTH_TRANSITIONS_DAYS (idx_health_transitions_created)."""
    return delete_in_batches(
        table="controller_health_transitions", pk="id",
        where="created_at < now() - make_interval(days => %(days)s)",
        params={"days": settings.RETENTION_HEALTH_TRANSITIONS_DAYS}, batch_size=batch_size, dry_run=dry_run,
    )
