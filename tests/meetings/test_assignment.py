"""meeting_assign on the real database: reuse, the least-loaded weighted choice, stale and unhealthy MCs
replaced, the degraded fallback, no capacity, and the index the candidate query uses."""

from __future__ import annotations

import random
from collections import Counter
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from audit.models import AuditLog, OutboxEvent
from controllers.models import MeetingController
from darktower.errors import NoCapacity
from darktower.process import gc_id
from meetings.models import Meeting, MeetingAssignment
from meetings.services.assignment import Candidate, assignment_candidates, meeting_assign, weighted_order
from tests.factories import make_controller, make_meeting

pytestmark = pytest.mark.django_db

REGION = "eu-west-1"


def mc(name, *, load=0, max_meetings=100, health="healthy", age_seconds=0, region=REGION):
    return make_controller(
        controller_id=name, region=region, health=health, current_meetings=load, max_meetings=max_meetings,
        last_heartbeat_at=timezone.now() - timedelta(seconds=age_seconds),
    )


def current(controller_id):
    """The effective load placement judges: reported meetings plus those assigned since (in-flight)."""
    controller = MeetingController.objects.get(pk=controller_id)
    return controller.current_meetings + controller.assigned_since_heartbeat


def active_rows(meeting):
    return list(MeetingAssignment.objects.filter(meeting=meeting, ended_at__isnull=True))


def test_new_assignment_records_everything(owner):
    mc("mc-a", load=10)
    meeting = make_meeting(host=owner)
    result = meeting_assign(meeting_id=meeting.pk, region=REGION, actor_user_id=owner.pk)
    assert (result.controller_id, result.reused) == ("mc-a", False)
    assert result.grpc_endpoint == MeetingController.objects.get(pk="mc-a").grpc_endpoint
    [row] = active_rows(meeting)
    assert (row.meeting_controller_id, row.region, row.assigned_by_gc_id) == ("mc-a", REGION, gc_id())
    assert row.pk == result.assignment_id
    meeting.refresh_from_db()
    assert (meeting.assigned_controller_id, meeting.assigned_region) == ("mc-a", REGION)
    assert current("mc-a") == 11  # the next choice sees it
    # In flight until the MC's next heartbeat reports it: the reported count is left to the MC.
    controller = MeetingController.objects.get(pk="mc-a")
    assert (controller.current_meetings, controller.assigned_since_heartbeat) == (10, 1)
    event = OutboxEvent.objects.get(event_type="meeting_assigned", aggregate_id=str(meeting.pk))
    assert event.payload["controller_id"] == "mc-a" and event.payload["assigned_by_gc_id"] == gc_id()
    assert event.payload["previous_controller_id"] is None
    assert event.payload["rule"] == result.rule == "least_loaded"
    audit = AuditLog.objects.get(event_type="meeting_assigned", target_id=str(meeting.pk))
    assert audit.actor_user_id == owner.pk and audit.metadata["controller_id"] == "mc-a"
    assert audit.metadata["rule"] == "least_loaded"


def test_an_active_assignment_on_a_healthy_fresh_mc_is_reused(owner):
    mc("mc-a", load=90)
    mc("mc-b", load=0)
    meeting = make_meeting(host=owner)
    first = meeting_assign(meeting_id=meeting.pk, region=REGION, rng=random.Random(1))
    before = {c.pk: c.current_meetings for c in MeetingController.objects.all()}
    again = meeting_assign(meeting_id=meeting.pk, region=REGION)
    assert again.reused and again.controller_id == first.controller_id and again.assignment_id == first.assignment_id
    assert {c.pk: c.current_meetings for c in MeetingController.objects.all()} == before
    assert OutboxEvent.objects.filter(event_type="meeting_assigned").count() == 1
    assert len(active_rows(meeting)) == 1


def test_regions_are_assigned_independently(owner):
    mc("mc-eu")
    mc("mc-us", region="us-west-2")
    meeting = make_meeting(host=owner)
    assert meeting_assign(meeting_id=meeting.pk, region=REGION).controller_id == "mc-eu"
    assert meeting_assign(meeting_id=meeting.pk, region="us-west-2").controller_id == "mc-us"
    assert MeetingAssignment.objects.filter(meeting=meeting, ended_at__isnull=True).count() == 2


def test_candidates_are_the_five_least_loaded_ties_to_the_newest_heartbeat():
    mc("mc-0", load=0, age_seconds=5)
    mc("mc-0-newer", load=0, age_seconds=1)
    for index, load in enumerate([10, 20, 30, 40, 50]):
        mc(f"mc-{load}", load=load, age_seconds=index)
    mc("mc-full", load=100)
    mc("mc-stale", load=0, age_seconds=settings.HEARTBEAT_STALE_THRESHOLD_SECONDS + 5)
    mc("mc-other-region", load=0, region="ap-south-1")
    for status in ("unhealthy", "draining", "pending"):
        mc(f"mc-{status}", load=0, health=status)
    names = [c.controller_id for c in assignment_candidates(REGION)]
    assert names == ["mc-0-newer", "mc-0", "mc-10", "mc-20", "mc-30"]


def test_load_ratio_not_raw_count_orders_candidates():
    mc("big", load=50, max_meetings=1000)  # 5 %
    mc("small", load=5, max_meetings=10)  # 50 %
    assert [c.controller_id for c in assignment_candidates(REGION)] == ["big", "small"]


def test_the_choice_is_weighted_by_spare_capacity():
    empty = Candidate("empty", "healthy", 0, 100)  # weight 1.0
    busy = Candidate("busy", "healthy", 90, 100)  # weight 0.1
    nearly_full = Candidate("nearly-full", "healthy", 999, 1000)  # weight capped at 0.01, never zero
    rng = random.Random(42)
    firsts = Counter(weighted_order([empty, busy, nearly_full], rng)[0].controller_id for _ in range(20_000))
    total = 1.0 + 0.1 + 0.01
    assert firsts["empty"] / 20_000 == pytest.approx(1.0 / total, abs=0.02)
    assert firsts["busy"] / 20_000 == pytest.approx(0.1 / total, abs=0.01)
    assert 0 < firsts["nearly-full"] < 20_000 * 0.02
    # Every draw is a permutation: the rest are fallbacks.
    assert sorted(c.controller_id for c in weighted_order([empty, busy, nearly_full], rng)) == [
        "busy", "empty", "nearly-full"
    ]


def test_only_the_five_least_loaded_are_ever_chosen(owner):
    # Loads far apart, so the 150 bumps below do not reorder the ranking.
    for load in (0, 5, 10, 15, 20, 25, 30):
        mc(f"mc-{load:02d}", load=load * 100, max_meetings=10_000)
    chosen = Counter()
    rng = random.Random(7)
    for _ in range(150):
        meeting = make_meeting(host=owner)
        chosen[meeting_assign(meeting_id=meeting.pk, region=REGION, rng=rng).controller_id] += 1
    assert set(chosen) <= {"mc-00", "mc-05", "mc-10", "mc-15", "mc-20"}
    assert "mc-30" not in chosen and "mc-25" not in chosen
    assert len(chosen) >= 4  # random, not always the single least loaded


def test_many_meetings_spread_over_mcs_according_to_load(owner):
    mc("idle", load=0)
    mc("half", load=50)
    mc("busy", load=85)
    rng = random.Random(2024)
    counts = Counter()
    for _ in range(60):
        meeting = make_meeting(host=owner)
        counts[meeting_assign(meeting_id=meeting.pk, region=REGION, rng=rng).controller_id] += 1
    assert sum(counts.values()) == 60
    assert counts["idle"] > counts["half"] > counts["busy"]
    assert current("idle") == counts["idle"] and current("half") == 50 + counts["half"]
    assert current("busy") == 85 + counts["busy"]
    # Bumps feed back: the idle MC took the bulk but did not take everything.
    assert counts["idle"] < 60


def test_equal_mcs_share_meetings_evenly(owner):
    for name in ("a", "b", "c", "d"):
        mc(f"mc-{name}")
    rng = random.Random(99)
    for _ in range(200):
        meeting = make_meeting(host=owner)
        meeting_assign(meeting_id=meeting.pk, region=REGION, rng=rng)
    loads = sorted(current(f"mc-{name}") for name in "abcd")
    assert sum(loads) == 200
    assert loads[0] >= 40 and loads[-1] <= 60, loads


@pytest.mark.parametrize("why", ["stale", "unhealthy", "draining"])
def test_an_assignment_whose_mc_is_stale_or_not_healthy_is_replaced(owner, why):
    old = mc("mc-old", load=5, age_seconds=settings.HEARTBEAT_STALE_THRESHOLD_SECONDS + 10 if why == "stale" else 0,
             health="healthy" if why == "stale" else why)
    mc("mc-new", load=0)
    meeting = make_meeting(host=owner)
    stale = MeetingAssignment.objects.create(meeting=meeting, meeting_controller=old, region=REGION,
                                             assigned_by_gc_id="gc-old")
    result = meeting_assign(meeting_id=meeting.pk, region=REGION)
    assert (result.controller_id, result.reused) == ("mc-new", False)
    stale.refresh_from_db()
    assert stale.ended_at is not None and stale.end_reason == "reassigned"
    [row] = active_rows(meeting)
    assert row.meeting_controller_id == "mc-new"
    assert (current("mc-old"), current("mc-new")) == (4, 1)
    event = OutboxEvent.objects.get(event_type="meeting_assigned")
    assert event.payload["previous_controller_id"] == "mc-old"
    assert Meeting.objects.get(pk=meeting.pk).assigned_controller_id == "mc-new"


def test_degraded_mcs_only_when_no_healthy_one_exists(owner):
    mc("mc-degraded", load=0, health="degraded")
    mc("mc-healthy", load=50)
    rng = random.Random(3)
    for _ in range(20):
        meeting = make_meeting(host=owner)
        assert meeting_assign(meeting_id=meeting.pk, region=REGION, rng=rng).controller_id == "mc-healthy"
    MeetingController.objects.filter(pk="mc-healthy").update(health_status="unhealthy")
    meeting = make_meeting(host=owner)
    assert meeting_assign(meeting_id=meeting.pk, region=REGION).controller_id == "mc-degraded"


def test_a_degraded_mc_keeps_its_meeting_unless_a_healthy_one_can_take_it(owner):
    degraded = mc("mc-degraded", load=1, health="degraded")
    mc("mc-other-degraded", load=0, health="degraded")
    meeting = make_meeting(host=owner)
    MeetingAssignment.objects.create(meeting=meeting, meeting_controller=degraded, region=REGION,
                                     assigned_by_gc_id="gc")
    result = meeting_assign(meeting_id=meeting.pk, region=REGION)
    assert (result.controller_id, result.reused) == ("mc-degraded", True)
    mc("mc-healthy")
    result = meeting_assign(meeting_id=meeting.pk, region=REGION)
    assert (result.controller_id, result.reused) == ("mc-healthy", False)


@pytest.mark.parametrize("fleet", ["none", "full", "stale", "not-available", "other-region"])
def test_no_candidate_raises_no_capacity_and_writes_nothing(owner, fleet):
    if fleet == "full":
        mc("mc-full", load=10, max_meetings=10)
    elif fleet == "stale":
        mc("mc-stale", age_seconds=settings.HEARTBEAT_STALE_THRESHOLD_SECONDS + 1)
    elif fleet == "not-available":
        for status in ("pending", "unhealthy", "draining"):
            mc(f"mc-{status}", health=status)
    elif fleet == "other-region":
        mc("mc-far", region="ap-south-1")
    old = mc("mc-dead", health="unhealthy", load=3)
    meeting = make_meeting(host=owner)
    stale = MeetingAssignment.objects.create(meeting=meeting, meeting_controller=old, region=REGION,
                                             assigned_by_gc_id="gc")
    with pytest.raises(NoCapacity):
        meeting_assign(meeting_id=meeting.pk, region=REGION)
    stale.refresh_from_db()
    assert stale.ended_at is None  # rolled back with the failed choice
    assert current("mc-dead") == 3
    assert not OutboxEvent.objects.exists()


def test_a_candidate_that_fills_up_after_the_read_falls_back_to_the_next(owner, monkeypatch):
    mc("mc-a", load=0)
    mc("mc-b", load=0)
    from meetings.services import assignment

    real = assignment.assignment_candidates

    def read_then_fill(region, **kwargs):
        candidates = real(region, **kwargs)
        # Another GC fills mc-a between our read and our compare-and-set.
        MeetingController.objects.filter(pk="mc-a").update(current_meetings=100)
        return candidates

    monkeypatch.setattr(assignment, "assignment_candidates", read_then_fill)

    class FirstIsA(random.Random):
        def choices(self, population, weights=None, **kwargs):
            return [0]

    meeting = make_meeting(host=owner)
    result = meeting_assign(meeting_id=meeting.pk, region=REGION, rng=FirstIsA())
    assert result.controller_id == "mc-b"
    assert active_rows(meeting)[0].meeting_controller_id == "mc-b"
    assert (current("mc-a"), current("mc-b")) == (100, 1)


def test_the_candidate_query_uses_the_available_controllers_partial_index():
    # A fleet where most rows in the region take no meetings: what the partial index is for.
    statuses = ["healthy", "degraded", "unhealthy", "draining", "pending"] + ["unhealthy"] * 5
    for region in (REGION, "us-east-1", "ap-south-1", "sa-east-1"):
        for index in range(50):
            mc(f"mc-{region}-{index}", region=region, load=index, health=statuses[index % len(statuses)])
    with CaptureQueriesContext(connection) as captured:
        assert len(assignment_candidates(REGION)) == 5
    [sql] = [query["sql"] for query in captured.captured_queries if "meeting_controllers" in query["sql"]]
    with connection.cursor() as cursor:
        # Earlier tests' rolled-back inserts leave index pages behind, and the planner costs an index by its size:
        # rebuilt (inside this test's transaction), the indexes are what this table alone makes them.
        cursor.execute("REINDEX TABLE meeting_controllers")
        cursor.execute("ANALYZE meeting_controllers")
        # The table is tiny in a test; without this the planner reads it whole. Which index it picks is the point.
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(f"EXPLAIN {sql}")
        plan = "\n".join(row[0] for row in cursor.fetchall())
    assert "idx_meeting_controllers_available" in plan, plan


def test_when_every_candidate_filled_up_the_region_is_read_again(owner, monkeypatch):
    for name in "abcde":
        mc(f"mc-{name}", load=0)
    mc("mc-f", load=50)  # the sixth: not among the first five candidates
    from meetings.services import assignment

    real = assignment.assignment_candidates
    calls = []

    def read_then_fill_all(region, **kwargs):
        candidates = real(region, **kwargs)
        if not calls:
            # Other GCs fill all five between our read and our compare-and-set.
            MeetingController.objects.filter(controller_id__in=[f"mc-{n}" for n in "abcde"]).update(
                current_meetings=100
            )
        calls.append([c.controller_id for c in candidates])
        return candidates

    monkeypatch.setattr(assignment, "assignment_candidates", read_then_fill_all)
    meeting = make_meeting(host=owner)
    result = meeting_assign(meeting_id=meeting.pk, region=REGION)
    assert result.controller_id == "mc-f"
    assert calls[1] == ["mc-f"]
    assert active_rows(meeting)[0].meeting_controller_id == "mc-f"
