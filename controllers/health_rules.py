"""The health state machine of a member (an MC or an MH): every rule of which state follows which, in one place.

States (controllers.models.HealthStatus): `pending` (registered, no good beat yet), `healthy`, `degraded` (serving,
with issues), `unhealthy` (out of use), `draining` (no new work). Placement uses healthy and degraded members.

Who moves a member, and by which rule of this module:
- a beat (MC heartbeat, MH load report): `BEAT_TRANSITIONS`, then the recovery gate for a member left `pending` or
  `unhealthy` by a good report (`RECOVERY_*`);
- re-registration: `REREGISTRATION_TRANSITIONS`, except a controller an operator drained stays `draining`, and an
  unhealthy member inside its hold-down comes back `pending` but held (`REGISTER_HOLD_DOWN_SQL`);
- the stale sweep: a member in a live state without a beat for `stale_thresholds()[state]` seconds becomes
  `unhealthy` (controllers.services.health, with its disruption and sweep-gap guards);
- operators and the drain: controllers.services.operations and controllers.services.drain.

Whatever moves it, the `*_health_bookkeeping` trigger (controllers.models.health_bookkeeping_trigger) keeps the
columns that follow a state change (`bookkeeping_after_change`). The SQL fragments here are generated from the
tables or state them once; tests/controllers/test_health_rules.py runs each against the tables on real rows.
"""

from __future__ import annotations

from django.conf import settings

from controllers.members import MemberKind
from controllers.models import HealthStatus

PENDING, HEALTHY, DEGRADED, UNHEALTHY, DRAINING = (
    HealthStatus.PENDING, HealthStatus.HEALTHY, HealthStatus.DEGRADED, HealthStatus.UNHEALTHY, HealthStatus.DRAINING,
)

# What a member reports about itself; PENDING means "no opinion" (proto3's default value).
REPORTED_STATES = tuple(HealthStatus)

# A beat: the member's state (rows) x the state it reports (columns) -> the stored state, before the recovery gate.
# - `draining` sticks: only re-registration or an operator's undrain ends it, so a drained MC that keeps saying
#   HEALTHY does not start taking meetings again.
# - DRAINING and UNHEALTHY reports are stored as reported.
# - `pending` and `unhealthy` stay as they are on a good report (HEALTHY, DEGRADED, PENDING): the recovery gate
#   promotes a pending member at once and an unhealthy one only after its hold-down.
# - Otherwise HEALTHY and DEGRADED are stored as reported, and PENDING changes nothing.
BEAT_TRANSITIONS: dict[str, dict[str, str]] = {
    #             reported: PENDING    HEALTHY    DEGRADED   UNHEALTHY  DRAINING
    PENDING: dict(zip(REPORTED_STATES, (PENDING, PENDING, PENDING, UNHEALTHY, DRAINING), strict=True)),
    HEALTHY: dict(zip(REPORTED_STATES, (HEALTHY, HEALTHY, DEGRADED, UNHEALTHY, DRAINING), strict=True)),
    DEGRADED: dict(zip(REPORTED_STATES, (DEGRADED, HEALTHY, DEGRADED, UNHEALTHY, DRAINING), strict=True)),
    UNHEALTHY: dict(zip(REPORTED_STATES, (UNHEALTHY, UNHEALTHY, UNHEALTHY, UNHEALTHY, DRAINING), strict=True)),
    DRAINING: dict(zip(REPORTED_STATES, (DRAINING, DRAINING, DRAINING, DRAINING, DRAINING), strict=True)),
}

# States a good beat leaves to the recovery gate (controllers.services.health.heartbeat_recovery).
RECOVERING_STATES = (PENDING, UNHEALTHY)
# The reports the recovery gate accepts; a PENDING report ("no opinion") counts as HEALTHY.
RECOVERABLE_REPORTS = (HEALTHY, DEGRADED)

# Re-registration: the state before -> the state after. A restart clears a drain and an unhealthy spell, with two
# exceptions that keep a restart from escaping a decision: a controller an operator drained stays `draining` (its
# deadline and target kept), and an unhealthy member inside its hold-down comes back `pending` held
# (REGISTER_HOLD_DOWN_SQL). A controller that reported DRAINING itself restarted after its own graceful drain.
REREGISTRATION_TRANSITIONS: dict[str, str] = {
    PENDING: PENDING, HEALTHY: HEALTHY, DEGRADED: DEGRADED, UNHEALTHY: PENDING, DRAINING: PENDING,
}
# A state re-registration keeps when the drain was an operator's.
OPERATOR_DRAIN_KEPT = DRAINING


def health_after(current: str, reported: str) -> str:
    """The stored health after a member in state `current` reports `reported`, before the recovery gate."""
    return BEAT_TRANSITIONS[current][reported]


def recovery_report(reported: str) -> str | None:
    """What a report asks of the recovery gate: DEGRADED stays degraded, HEALTHY and PENDING are healthy; None for
    DRAINING and UNHEALTHY, which the gate never sees."""
    if reported in (DRAINING, UNHEALTHY):
        return None
    return DEGRADED if reported == DEGRADED else HEALTHY


def beat_is_steady(known: str | None, reported: str) -> bool:
    """Whether a beat reporting `reported` leaves a member known to be in state `known` (None: not known) there,
    with nothing for the recovery gate: such a beat needs no synchronous write (controllers.heartbeats) and is
    flushed by compare-and-set."""
    return known is not None and known not in RECOVERING_STATES and health_after(known, reported) == known


def stale_thresholds() -> dict[str, int]:
    """Seconds without a beat after which a member in each live state is stale (the sweep then marks it unhealthy).

    `pending` members have not sent a good beat since they (re-)registered or were undrained (the first one
    promotes them): they get the startup grace instead. `unhealthy` and `draining` members are never swept.
    """
    return {
        PENDING: settings.PENDING_STARTUP_GRACE_SECONDS,
        HEALTHY: settings.HEARTBEAT_STALE_THRESHOLD_SECONDS,
        DEGRADED: settings.HEARTBEAT_STALE_THRESHOLD_SECONDS,
    }


def bookkeeping_after_change(to_status: str) -> dict[str, str | None]:
    """What the bookkeeping trigger does to the other columns when health_status changes to `to_status` ("now":
    the transaction's time; None: cleared; drain columns on controllers only)."""
    return {
        "health_changed_at": "now",
        "good_heartbeats": "0",
        "unhealthy_since": "now" if to_status == UNHEALTHY else None,
        "drain_deadline": "kept" if to_status == DRAINING else None,
        "drain_target_controller_id": "kept" if to_status == DRAINING else None,
    }


# --- SQL -----------------------------------------------------------------------------------------------------------
# Literals from HealthStatus, never input.


def health_after_sql(current: str, reported: str) -> str:
    """BEAT_TRANSITIONS as a CASE over the SQL expressions `current` and `reported`."""
    whens = " ".join(
        f"WHEN {current} = '{before}' AND {reported} = '{report}' THEN '{BEAT_TRANSITIONS[before][report]}'"
        for before in HealthStatus
        for report in REPORTED_STATES
    )
    return f"CASE {whens} ELSE {current} END"


def reregistration_sql(current: str, *, operator_drain: str) -> str:
    """REREGISTRATION_TRANSITIONS as a CASE over `current`; `operator_drain`: a boolean SQL expression, whether
    the drain was an operator's (`false` for a kind without operator drains)."""
    moved = ", ".join(f"'{state}'" for state, after in REREGISTRATION_TRANSITIONS.items() if after != state)
    targets = {after for state, after in REREGISTRATION_TRANSITIONS.items() if after != state}
    assert targets == {PENDING}, "one target state: the CASE below says so"
    return f"""CASE
        WHEN {current} = '{OPERATOR_DRAIN_KEPT}' AND {operator_drain} THEN '{OPERATOR_DRAIN_KEPT}'
        WHEN {current} IN ({moved}) THEN '{PENDING}'
        ELSE {current}
    END"""


# Re-registration of a member that is `unhealthy` inside its hold-down (UNHEALTHY_HOLD_DOWN_SECONDS since
# unhealthy_since, `%(hold_down)s`): `pending` held until the end of the hold-down, so a flapping MC that restarts
# does not skip it. A `pending` member keeps its hold; any other state clears it. `t`: the row before the UPSERT.
REGISTER_HOLD_DOWN_SQL = """CASE
        WHEN t.health_status = 'unhealthy' AND t.unhealthy_since > now() - make_interval(secs => %(hold_down)s)
        THEN t.unhealthy_since + make_interval(secs => %(hold_down)s)
        WHEN t.health_status = 'pending' THEN t.hold_down_until
    END"""


def beat_hold_down_sql(*, beat: str, from_status: str) -> str:
    """The SET items of a beat for the hold-down, which needs consecutive good beats: an UNHEALTHY report restarts
    the count, and for a member that is unhealthy already also its hold-down (on a state change the trigger does
    both). `beat`: the beat record's alias; `from_status`: the member's state before."""
    return (
        f", good_heartbeats = CASE WHEN {beat}.reported = '{UNHEALTHY}' THEN 0 ELSE t.good_heartbeats END"
        f", unhealthy_since = CASE WHEN {beat}.reported = '{UNHEALTHY}' AND {from_status} = '{UNHEALTHY}' THEN now() "
        "ELSE t.unhealthy_since END"
    )


def beat_drain_deadline_sql(*, beat: str, from_status: str) -> str:
    """Controllers: a DRAINING report from a controller not draining yet (BEAT_TRANSITIONS: it is `draining` after)
    starts the default drain deadline (`%(drain_deadline)s` seconds), so the drain job bounds a controller's own
    drain like an operator's."""
    return (
        f", drain_deadline = CASE WHEN {beat}.reported = '{DRAINING}' AND {from_status} <> '{DRAINING}' "
        "THEN now() + make_interval(secs => %(drain_deadline)s) ELSE t.drain_deadline END"
    )


def placeable_sql(kind: MemberKind, *, clock: str = "now()") -> str:
    """Placement's rule for a member row as a predicate: a state that receives new meetings
    (`kind.placeable_states`) and a beat younger than `%(stale)s` seconds (HEARTBEAT_STALE_THRESHOLD_SECONDS) by
    the database's clock `clock`. Room is not part of it: a full member is placeable capacity, all of it used.
    Placement (meetings.services.assignment) and the fleet dashboard's capacity read this one definition."""
    states = ", ".join(f"'{state}'" for state in kind.placeable_states)
    return f"health_status IN ({states}) AND last_heartbeat_at > {clock} - make_interval(secs => %(stale)s)"


# The recovery gate, per row of a beat batch (`r`: the batch, `t`: the member). A pending member's first good beat
# promotes it at once, unless it is held (it re-registered inside the hold-down of an unhealthy spell:
# hold_down_until set after it became pending); an unhealthy or held one counts the beat and is promoted only when
# the hold-down has passed (UNHEALTHY_HOLD_DOWN_SECONDS, `%(hold_down)s`) and enough consecutive good beats arrived
# (UNHEALTHY_RECOVERY_HEARTBEATS, `%(needed)s`). Members made unhealthy by an operator or by the drain deadline are
# not recovered by beats (re-registration or undrain brings them back): their latest transition says so
# (idx_health_transitions_component, one probe per unhealthy row).
RECOVERY_WHERE_SQL = """
t.{pk} = r.id AND (
    t.health_status = 'pending'
    OR (t.health_status = 'unhealthy' AND coalesce((
        SELECT ht.reason NOT IN ('operator', 'drain-deadline') FROM controller_health_transitions ht
        WHERE ht.component_type = %(component_type)s AND ht.component_id = t.{pk}
        ORDER BY ht.created_at DESC, ht.id DESC LIMIT 1
    ), true))
)
"""

RECOVERY_HELD_SQL = "(t.hold_down_until IS NOT NULL AND t.hold_down_until > t.health_changed_at)"

RECOVERY_SET_STATUS_SQL = """CASE
    WHEN s.from_status = 'pending' AND NOT s.held THEN s.reported
    WHEN s.from_status = 'pending'
    THEN CASE WHEN t.good_heartbeats + 1 >= %(needed)s AND t.hold_down_until <= now() THEN s.reported
              ELSE t.health_status END
    WHEN t.good_heartbeats + 1 >= %(needed)s
         AND coalesce(t.unhealthy_since, t.health_changed_at) <= now() - make_interval(secs => %(hold_down)s)
    THEN s.reported
    ELSE t.health_status
END"""

# Applies when the state does not change (the trigger resets the counter when it does).
RECOVERY_COUNT_SQL = ", good_heartbeats = least(t.good_heartbeats + 1, 32767)"

RECOVERY_REASON_SQL = (
    "CASE WHEN c.from_status = 'pending' AND NOT c.held THEN 'heartbeat' ELSE 'hold-down-cleared' END"
)
