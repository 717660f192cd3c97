"""Placement that does not herd, on the real database: in-flight accounting reconciled by heartbeats,
hard capacity whatever the reports say, the per-MC cap on assignments per minute, participant reservations of
large meetings, the rule named in audit, outbox and metrics, and the burst of 500 joins over 10 MCs that do not
heartbeat meanwhile."""

from __future__ import annotations

import random
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db.models import F
from django.db.models.functions import Now

from audit.models import AuditLog, OutboxEvent
from controllers.members import CONTROLLERS
from controllers.models import HealthStatus, MeetingController
from controllers.services.beats import Beat, beats_flush, beats_record
from darktower.errors import NoCapacity
from darktower.metrics import REGISTRY
from meetings.models import Meeting, MeetingAssignment
from meetings.services.assignment import assignment_candidates, meeting_assign
from meetings.services.meetings import meeting_end
from tests.beats import controller_heartbeat
from tests.factories import make_controller, make_meeting
from tests.meetings.test_assignment_concurrency import run_concurrently

REGION = "eu-central-1"


def mc(name, *, region=REGION, **extra):
    return make_controller(controller_id=name, region=region, **extra)


def row(controller_id) -> MeetingController:
    return MeetingController.objects.get(pk=controller_id)


def load(controller: MeetingController) -> int:
    return controller.current_meetings + controller.assigned_since_heartbeat


def assign(meeting, rng_seed=1):
    return meeting_assign(meeting_id=meeting.pk, region=REGION, rng=random.Random(rng_seed))


def assignments_sample(rule: str, outcome: str) -> float:
    return REGISTRY.get_sample_value("darktower_assignments_total", {"rule": rule, "outcome": outcome}) or 0.0


# --- in-flight accounting ---------------------------------------------------------------------------------


@pytest.mark.django_db
def test_assignments_since_the_last_heartbeat_count_toward_the_load():
    # mc-a reported 0 but took 5 since; mc-b reported 3 and took none: mc-b is the less loaded.
    mc("mc-a", max_meetings=10, current_meetings=0, assigned_since_heartbeat=5)
    mc("mc-b", max_meetings=10, current_meetings=3)
    candidates = assignment_candidates(REGION)
    assert [(c.controller_id, c.load_ratio) for c in candidates] == [("mc-b", 0.3), ("mc-a", 0.5)]


@pytest.mark.django_db
def test_placement_counts_in_flight_and_the_next_heartbeat_reconciles(owner):
    mc("mc-a", current_meetings=4)
    result = assign(make_meeting(host=owner))
    assert (row("mc-a").current_meetings, row("mc-a").assigned_since_heartbeat) == (4, 1)

    # A beat without counts (no capacity block) reconciles nothing.
    controller_heartbeat(controller_id="mc-a", reported=HealthStatus.HEALTHY)
    assert row("mc-a").assigned_since_heartbeat == 1
    # The MC's next report, received after the assignment, includes the meeting: the in-flight count starts again
    # from zero. (The test runs in one transaction, where now() stands still: date the assignment a second back
    # so that it precedes the report as it does between two real transactions.)
    MeetingAssignment.objects.filter(meeting_id=result.meeting_id).update(assigned_at=Now() - timedelta(seconds=1))
    controller_heartbeat(controller_id="mc-a", reported=HealthStatus.HEALTHY, current_meetings=5)
    assert (row("mc-a").current_meetings, row("mc-a").assigned_since_heartbeat) == (5, 0)

    # Ending it before any report gives back the in-flight slot first.
    MeetingController.objects.filter(pk="mc-a").update(assigned_since_heartbeat=1, current_meetings=4)
    meeting_end(meeting_id=result.meeting_id, region=REGION)
    assert (row("mc-a").current_meetings, row("mc-a").assigned_since_heartbeat) == (4, 0)
    assert Meeting.objects.get(pk=result.meeting_id).assigned_controller_id is None


def _write_alone(beat: Beat) -> None:
    beats_record(kind=CONTROLLERS, beats=[beat])


def _flush_known_healthy(beat: Beat) -> None:
    # A process that knows the MC healthy flushes its beat by compare-and-set (no row lock first).
    assert beats_flush(kind=CONTROLLERS, beats=[beat], known={beat.member_id: "healthy"}).outcomes == []


@pytest.mark.django_db
@pytest.mark.parametrize("write", [_write_alone, _flush_known_healthy], ids=["alone", "steady-flush"])
def test_a_report_keeps_in_flight_the_assignments_made_after_it_was_received(owner, write):
    # A coalesced beat is written up to a flush interval after it arrived: a meeting assigned in between is not
    # in its report, so it must stay in flight instead of being forgotten until the next heartbeat.
    mc("mc-a", current_meetings=4, assigned_since_heartbeat=2)
    for seconds_ago in (10, 2):  # one assigned before the beat arrived (5 s ago), one after
        MeetingAssignment.objects.create(
            meeting=make_meeting(host=owner), meeting_controller_id="mc-a", region=REGION, assigned_by_gc_id="gc",
            assigned_at=Now() - timedelta(seconds=seconds_ago),
        )
    received_five_seconds_ago = time.monotonic() - 5
    write(Beat("mc-a", HealthStatus.HEALTHY, {"current_meetings": 5}, received_five_seconds_ago))
    assert (row("mc-a").current_meetings, row("mc-a").assigned_since_heartbeat) == (5, 1)

    # A report received now covers both.
    write(Beat("mc-a", HealthStatus.HEALTHY, {"current_meetings": 6}))
    assert (row("mc-a").current_meetings, row("mc-a").assigned_since_heartbeat) == (6, 0)


# --- hard capacity ------------------------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize(("reported", "in_flight"), [(10, 0), (0, 10), (6, 4), (12, 0)])
def test_an_mc_is_never_assigned_past_max_meetings_whatever_it_reports(owner, reported, in_flight):
    mc("mc-a", max_meetings=10, current_meetings=reported, assigned_since_heartbeat=in_flight)
    before = AuditLog.objects.count()
    with pytest.raises(NoCapacity):
        assign(make_meeting(host=owner))
    assert (row("mc-a").current_meetings, row("mc-a").assigned_since_heartbeat) == (reported, in_flight)
    assert not MeetingAssignment.objects.exists() and AuditLog.objects.count() == before


@pytest.mark.django_db
def test_the_last_slot_goes_once(owner):
    mc("mc-a", max_meetings=10, current_meetings=7, assigned_since_heartbeat=2)
    assert assign(make_meeting(host=owner)).controller_id == "mc-a"
    assert load(row("mc-a")) == 10
    with pytest.raises(NoCapacity):
        assign(make_meeting(host=owner))


# --- per-MC cap on assignments per minute -------------------------------------------------------------------


@pytest.mark.django_db
def test_the_per_minute_cap_refuses_an_mc_until_its_window_ends(owner, settings):
    settings.PLACEMENT_MAX_ASSIGNMENTS_PER_MINUTE = 2
    mc("mc-a")
    mc("mc-b")
    chosen = Counter(assign(make_meeting(host=owner), seed).controller_id for seed in range(4))
    assert chosen == {"mc-a": 2, "mc-b": 2}
    assert {c.assignments_in_window for c in MeetingController.objects.all()} == {2}
    # Both have room for 98 more meetings, but not this minute.
    assert assignment_candidates(REGION) == []
    with pytest.raises(NoCapacity):
        assign(make_meeting(host=owner))

    # mc-b's window began more than a minute ago: a new window opens with this assignment.
    MeetingController.objects.filter(pk="mc-b").update(
        assignments_window_start=F("assignments_window_start") - timedelta(seconds=61)
    )
    assert assign(make_meeting(host=owner)).controller_id == "mc-b"
    assert row("mc-b").assignments_in_window == 1


@pytest.mark.django_db
def test_without_the_cap_one_mc_takes_every_meeting(owner, settings):
    settings.PLACEMENT_MAX_ASSIGNMENTS_PER_MINUTE = 0
    mc("mc-a")
    for seed in range(5):
        assert assign(make_meeting(host=owner), seed).controller_id == "mc-a"
    assert (row("mc-a").assigned_since_heartbeat, row("mc-a").assignments_in_window) == (5, 5)


# --- large meetings -----------------------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_large_meeting_lands_where_its_participants_fit_and_reserves_them(owner, settings):
    settings.PLACEMENT_LARGE_MEETING_THRESHOLD = 100
    # By meeting load mc-roomy is the busier one; only it has room for 500 more participants.
    mc("mc-crowded", current_meetings=1, max_participants=1000, current_participants=600)
    mc("mc-roomy", current_meetings=50, max_participants=1000, current_participants=100)
    large = make_meeting(host=owner, max_participants=500)

    result = assign(large)

    assert result.controller_id == "mc-roomy"
    assert MeetingAssignment.objects.get(pk=result.assignment_id).reserved_participants == 500
    assert row("mc-roomy").reserved_participants == 500
    assert OutboxEvent.objects.get(aggregate_id=str(large.pk)).payload["reserved_participants"] == 500
    # 100 reported + 500 reserved + 500 more does not fit anywhere now.
    with pytest.raises(NoCapacity):
        assign(make_meeting(host=owner, max_participants=500))
    # A meeting at the threshold reserves nothing and goes by meeting load.
    small = assign(make_meeting(host=owner, max_participants=100))
    assert small.controller_id == "mc-crowded"
    assert MeetingAssignment.objects.get(pk=small.assignment_id).reserved_participants == 0

    # Ending the large meeting gives its reservation back.
    meeting_end(meeting_id=large.pk, region=REGION)
    assert row("mc-roomy").reserved_participants == 0
    assert assign(make_meeting(host=owner, max_participants=500)).controller_id == "mc-roomy"


@pytest.mark.django_db
def test_a_reassigned_large_meeting_moves_its_reservation(owner, settings):
    settings.PLACEMENT_LARGE_MEETING_THRESHOLD = 100
    mc("mc-old")
    large = make_meeting(host=owner, max_participants=300)
    assert assign(large).controller_id == "mc-old"
    MeetingController.objects.filter(pk="mc-old").update(health_status=HealthStatus.UNHEALTHY)
    mc("mc-new")

    result = assign(large)

    assert (result.controller_id, result.reused) == ("mc-new", False)
    assert (row("mc-old").reserved_participants, row("mc-old").assigned_since_heartbeat) == (0, 0)
    assert row("mc-new").reserved_participants == 300


# --- the rule that chose the MC -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_audit_outbox_and_metrics_name_the_rule(owner, django_capture_on_commit_callbacks):
    mc("mc-healthy")
    mc("mc-degraded", health=HealthStatus.DEGRADED, region="ap-east-1")
    samples = {
        key: assignments_sample(*key) for key in [
            ("least_loaded", "assigned"), ("reused", "reused"), ("degraded_fallback", "assigned"),
            ("least_loaded", "no_capacity"),
        ]
    }
    meeting = make_meeting(host=owner)

    with django_capture_on_commit_callbacks(execute=True):
        first = assign(meeting)
        again = assign(meeting)
        degraded = meeting_assign(meeting_id=meeting.pk, region="ap-east-1")
        with pytest.raises(NoCapacity):
            meeting_assign(meeting_id=meeting.pk, region="sa-east-1")

    assert (first.rule, again.rule, degraded.rule) == ("least_loaded", "reused", "degraded_fallback")
    assert again.reused and not degraded.reused
    rules = dict(OutboxEvent.objects.filter(event_type="meeting_assigned").values_list("payload__controller_id",
                                                                                     "payload__rule"))
    assert rules == {"mc-healthy": "least_loaded", "mc-degraded": "degraded_fallback"}
    audits = AuditLog.objects.filter(event_type="meeting_assigned").values_list("metadata__rule", flat=True)
    assert sorted(audits) == ["degraded_fallback", "least_loaded"]
    assert {key: assignments_sample(*key) - before for key, before in samples.items()} == {
        ("least_loaded", "assigned"): 1, ("reused", "reused"): 1, ("degraded_fallback", "assigned"): 1,
        ("least_loaded", "no_capacity"): 1,
    }


@pytest.mark.django_db
def test_a_degraded_mc_that_keeps_its_meeting_is_the_degraded_fallback(owner, django_capture_on_commit_callbacks):
    mc("mc-degraded", health=HealthStatus.DEGRADED)
    meeting = make_meeting(host=owner)
    assign(meeting)
    before = assignments_sample("degraded_fallback", "reused")
    with django_capture_on_commit_callbacks(execute=True):
        kept = assign(meeting)
    assert (kept.reused, kept.rule, kept.controller_id) == (True, "degraded_fallback", "mc-degraded")
    assert assignments_sample("degraded_fallback", "reused") - before == 1


# --- a burst of joins between two heartbeats ----------------------------------------------------------------


def _burst(meetings_count: int, *, controllers: int, max_meetings: int, threads: int = 10):
    """`meetings_count` new meetings assigned at once by `threads` threads (own connections, real commits) over
    `controllers` equal MCs that do not heartbeat meanwhile. Returns the results and errors by meeting index."""
    for index in range(controllers):
        mc(f"mc-{index:02d}", max_meetings=max_meetings)
    meetings = Meeting.objects.bulk_create(
        Meeting(display_name=f"Burst {index}", meeting_code=f"burst-{index:05d}") for index in range(meetings_count)
    )
    per_thread = meetings_count // threads

    def work(thread):
        outcomes = {}
        for index in range(thread * per_thread, (thread + 1) * per_thread):
            try:
                outcomes[index] = meeting_assign(meeting_id=meetings[index].pk, region=REGION).controller_id
            except NoCapacity as exc:
                outcomes[index] = exc
        return outcomes

    results, errors = run_concurrently(work, count=threads)
    assert not errors, errors
    return {index: outcome for outcomes in results.values() for index, outcome in outcomes.items()}


@pytest.mark.django_db(transaction=True)
def test_500_joins_at_once_over_10_silent_mcs_spread_within_20_percent_of_even():
    outcomes = _burst(500, controllers=10, max_meetings=100)

    assert all(isinstance(outcome, str) for outcome in outcomes.values()), outcomes
    spread = Counter(outcomes.values())
    assert len(spread) == 10 and all(40 <= count <= 60 for count in spread.values()), spread
    controllers = {c.controller_id: c for c in MeetingController.objects.all()}
    # Nobody heartbeated: the whole load is in flight, and it is exactly what was assigned.
    assert {name: (c.current_meetings, c.assigned_since_heartbeat) for name, c in controllers.items()} == {
        name: (0, spread[name]) for name in controllers
    }
    assert MeetingAssignment.objects.filter(ended_at__isnull=True).count() == 500
    assert OutboxEvent.objects.filter(event_type="meeting_assigned").count() == 500


@pytest.mark.django_db(transaction=True)
def test_more_joins_than_capacity_fill_every_mc_exactly_and_the_rest_get_no_capacity():
    outcomes = _burst(80, controllers=10, max_meetings=5)

    assigned = Counter(outcome for outcome in outcomes.values() if isinstance(outcome, str))
    refused = [outcome for outcome in outcomes.values() if isinstance(outcome, NoCapacity)]
    assert sum(assigned.values()) == 50 and len(refused) == 30
    assert assigned == dict.fromkeys(assigned, 5) and len(assigned) == 10
    assert {load(c) for c in MeetingController.objects.all()} == {5}
    assert MeetingAssignment.objects.count() == 50  # the refused joins left no row behind
