"""Reads of the fleet for the operators' dashboard (admin) and anything else that shows the fleet.

Every function here costs a fixed number of queries whatever the fleet size: the per-region summary is
aggregated in SQL (one GROUP BY per table), never by iterating rows in Python.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import DurationField, ExpressionWrapper, F, FloatField, IntegerField, QuerySet
from django.db.models.expressions import RawSQL
from django.db.models.functions import Cast, Now, NullIf
from django.urls import reverse

from controllers.health_rules import placeable_sql
from controllers.members import CONTROLLERS, HANDLERS, MemberKind
from controllers.models import ComponentType, HealthStatus, HealthTransition, MediaHandler, MeetingController

HEALTH_STATES: tuple[str, ...] = tuple(HealthStatus.values)
RECENT_TRANSITIONS_WINDOW = timedelta(hours=1)


@dataclass(frozen=True)
class Capacity:
    """One kind of capacity of a region's members: `used` of the `placeable` capacity (members placement can give
    new meetings, controllers.health_rules.placeable_sql), and the `total` of every member whatever its state."""

    used: int
    placeable: int
    total: int

    @property
    def percent(self) -> int:
        """The share of the placeable capacity in use; 100 when nothing is placeable (no room at all)."""
        return min(100, round(100 * self.used / self.placeable)) if self.placeable else 100


@dataclass
class FleetSummary:
    """One table (MCs or MHs) in one region: members by health state, how many are placeable, and capacity."""

    count: int = 0
    placeable: int = 0
    by_health: dict[str, int] = field(default_factory=lambda: dict.fromkeys(HEALTH_STATES, 0))
    capacities: dict[str, Capacity] = field(default_factory=dict)


@dataclass
class RegionSummary:
    region: str
    controllers: FleetSummary = field(default_factory=FleetSummary)
    handlers: FleetSummary = field(default_factory=FleetSummary)
    transitions_last_hour: int = 0


def _summary_sql(kind: MemberKind, capacities: tuple[tuple[str, str], ...]) -> str:
    """One pass over a member table per region: counts per health state and of placeable members, and for each
    (used, capacity) pair of column expressions the used and capacity sums of placeable members and the capacity
    of all. The states are parameters so that the CHECK constraint's list and this query cannot drift apart; the
    rest are constants of this module."""
    placeable = placeable_sql(kind)
    columns = [f"count(*) FILTER (WHERE health_status = %(state_{state})s)" for state in HEALTH_STATES]
    columns.append(f"count(*) FILTER (WHERE {placeable})")
    for used, capacity in capacities:
        columns += [
            f"coalesce(sum({used}) FILTER (WHERE {placeable}), 0)",
            f"coalesce(sum({capacity}) FILTER (WHERE {placeable}), 0)",
            f"coalesce(sum({capacity}), 0)",
        ]
    return f"SELECT region, count(*), {', '.join(columns)} FROM {kind.table} GROUP BY region"  # noqa: S608


# Controllers' meetings include those assigned since their last heartbeat, as placement counts them.
_CONTROLLER_CAPACITIES = (
    ("meetings", "current_meetings + assigned_since_heartbeat", "max_meetings"),
    ("participants", "current_participants", "max_participants"),
)
_HANDLER_CAPACITIES = (
    ("streams", "current_streams", "max_streams"),
    ("bitrate_mbps", "current_bitrate_mbps", "max_bitrate_mbps"),
)
_CONTROLLERS_SQL = _summary_sql(CONTROLLERS, tuple((used, cap) for _, used, cap in _CONTROLLER_CAPACITIES))
_HANDLERS_SQL = _summary_sql(HANDLERS, tuple((used, cap) for _, used, cap in _HANDLER_CAPACITIES))
# idx_health_transitions_created bounds the scan to the last hour.
_TRANSITIONS_SQL = """
SELECT region, count(*) FROM controller_health_transitions
WHERE created_at >= now() - make_interval(secs => %s) AND from_status IS DISTINCT FROM to_status
GROUP BY region
"""


def _fleet_rows(sql: str) -> list[tuple[Any, ...]]:
    params: dict[str, Any] = {f"state_{state}": state for state in HEALTH_STATES}
    params["stale"] = settings.HEARTBEAT_STALE_THRESHOLD_SECONDS
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall()


def _fleet_summary(row: tuple[Any, ...], capacities: tuple[tuple[str, str, str], ...]) -> FleetSummary:
    states = len(HEALTH_STATES)
    sums = row[3 + states :]
    return FleetSummary(
        count=row[1],
        placeable=row[2 + states],
        by_health=dict(zip(HEALTH_STATES, row[2 : 2 + states], strict=True)),
        capacities={
            name: Capacity(*(int(value) for value in sums[3 * i : 3 * i + 3]))
            for i, (name, _, _) in enumerate(capacities)
        },
    )


def fleet_summary_by_region() -> list[RegionSummary]:
    """Per region: MCs and MHs by health state and how many are placeable, meeting / participant (MC) and stream /
    bitrate (MH) capacity, and the number of health transitions in the last hour. Three queries, whatever the
    fleet size."""
    regions: dict[str, RegionSummary] = {}

    def region(name: str) -> RegionSummary:
        return regions.setdefault(name, RegionSummary(region=name))

    for row in _fleet_rows(_CONTROLLERS_SQL):
        region(row[0]).controllers = _fleet_summary(row, _CONTROLLER_CAPACITIES)
    for row in _fleet_rows(_HANDLERS_SQL):
        region(row[0]).handlers = _fleet_summary(row, _HANDLER_CAPACITIES)
    with connection.cursor() as cursor:
        cursor.execute(_TRANSITIONS_SQL, [RECENT_TRANSITIONS_WINDOW.total_seconds()])
        for name, count in cursor.fetchall():
            region(name).transitions_last_hour = count
    return sorted(regions.values(), key=lambda summary: summary.region)


def _heartbeat_age() -> ExpressionWrapper:
    # The database's clock, as everywhere staleness is judged.
    return ExpressionWrapper(Now() - F("last_heartbeat_at"), output_field=DurationField())


# The meetings app owns meeting_assignments and sits above this one: the count reads its table, not its model.
_ACTIVE_ASSIGNMENTS_SQL = """(SELECT count(*) FROM meeting_assignments a
    WHERE a.meeting_controller_id = meeting_controllers.controller_id AND a.ended_at IS NULL)"""


def controllers_for_dashboard() -> QuerySet[MeetingController]:
    """Controllers with `heartbeat_age` (a timedelta, by the database's clock) and `active_assignments` (a
    correlated count on idx_assignments_active_by_mc), both computed in the page's one SELECT."""
    active = RawSQL(_ACTIVE_ASSIGNMENTS_SQL, (), IntegerField())  # noqa: S611 -- a constant
    return MeetingController.objects.annotate(heartbeat_age=_heartbeat_age(), active_assignments=active)


def handlers_for_dashboard() -> QuerySet[MediaHandler]:
    return MediaHandler.objects.annotate(heartbeat_age=_heartbeat_age())


def controllers_live_status(controller_ids: Iterable[str]) -> list[dict[str, Any]]:
    """What the dashboard's poll refreshes for the rows on screen: one SELECT by primary key."""
    rows = (
        MeetingController.objects.filter(pk__in=list(controller_ids))
        .annotate(heartbeat_age=_heartbeat_age())
        .values(
            "controller_id", "health_status", "heartbeat_age", "current_meetings", "assigned_since_heartbeat",
            "max_meetings", "current_participants", "reserved_participants", "max_participants",
            "cpu_usage_percent", "memory_usage_percent", "drain_deadline", "hold_down_until",
        )
    )
    return list(rows)


def handlers_live_status(handler_ids: Iterable[str]) -> list[dict[str, Any]]:
    rows = (
        MediaHandler.objects.filter(pk__in=list(handler_ids))
        .annotate(heartbeat_age=_heartbeat_age())
        .values("handler_id", "health_status", "heartbeat_age", "current_streams", "max_streams")
    )
    return list(rows)


def component_transitions_recent(
    *, component_type: str, component_id: str, limit: int = 20
) -> QuerySet[HealthTransition]:
    """A controller's or handler's latest transitions, newest first (idx_health_transitions_component)."""
    if component_type not in ComponentType.values:
        raise ValueError(f"unknown component type {component_type!r}")
    return HealthTransition.objects.filter(component_type=component_type, component_id=component_id).order_by(
        "-created_at", "-id"
    )[:limit]


@dataclass(frozen=True)
class RecentTransition:
    """One health transition as the dashboard's per-region timeline shows it."""

    region: str
    created_at: datetime
    component_type: str
    component_id: str
    from_status: str | None
    to_status: str
    reason: str
    actor_type: str

    @property
    def url(self) -> str:
        model = "meetingcontroller" if self.component_type == "controller" else "mediahandler"
        return reverse(f"admin:controllers_{model}_change", args=[self.component_id])


# Per region, the newest transitions that changed a state within the window: a LATERAL probe per region on
# idx_health_transitions_region (region, created_at), read backwards and stopped at the limit, so a burst of
# thousands of transitions in one region costs the same as a quiet hour. The regions come from the summary
# the page has already computed. Hold records (sweep-gap, disruption-guard: from = to) are left out, as in the
# summary's count.
_RECENT_TRANSITIONS_SQL = """
SELECT r.region, t.created_at, t.component_type, t.component_id, t.from_status, t.to_status, t.reason,
       t.actor_type
FROM unnest(%(regions)s::text[]) AS r(region)
CROSS JOIN LATERAL (
    SELECT created_at, id, component_type, component_id, from_status, to_status, reason, actor_type
    FROM controller_health_transitions
    WHERE region = r.region AND created_at >= now() - make_interval(secs => %(window)s)
      AND from_status IS DISTINCT FROM to_status
    ORDER BY created_at DESC, id DESC
    LIMIT %(limit)s
) t
ORDER BY r.region, t.created_at DESC, t.id DESC
"""


def transitions_recent_by_region(
    *, regions: Sequence[str], window: timedelta, limit: int
) -> dict[str, list[RecentTransition]]:
    """The last `limit` state changes of each region within `window`, newest first: one query."""
    if not regions:
        return {}
    with connection.cursor() as cursor:
        cursor.execute(
            _RECENT_TRANSITIONS_SQL,
            {"regions": list(regions), "window": window.total_seconds(), "limit": limit},
        )
        rows = [RecentTransition(*row) for row in cursor.fetchall()]
    by_region: dict[str, list[RecentTransition]] = {}
    for row in rows:
        by_region.setdefault(row.region, []).append(row)
    return by_region


def controllers_listing() -> QuerySet[MeetingController]:
    """Meeting controllers with their load ratio (computed by the database), by region."""
    return MeetingController.objects.annotate(
        # The load placement judges: the last report plus assignments made since (in-flight accounting).
        load=Cast(F("current_meetings") + F("assigned_since_heartbeat"), FloatField())
        / Cast(NullIf(F("max_meetings"), 0), FloatField()),
    ).order_by("region", "controller_id")


def media_handlers_listing() -> QuerySet[MediaHandler]:
    return MediaHandler.objects.order_by("region", "handler_id")
