"""The gRPC server's garbage-collector policy (controllers.grpc.collector): young generations collected as
usual and on a short schedule, the oldest one only on a long one, with what was loaded at start frozen."""

from __future__ import annotations

import gc
import time
import weakref
from collections.abc import Iterator

import pytest

from controllers.grpc.collector import NEVER, ScheduledCollector


class Node:
    """A cyclic-garbage candidate: refers to itself."""

    def __init__(self) -> None:
        self.me = self


def old_cycle() -> weakref.ref[Node]:
    """A self-referencing object moved to the oldest generation, then dropped: garbage only a full collection
    reclaims."""
    node = Node()
    found = weakref.ref(node)
    gc.collect(1)  # survivors of generations 0 and 1 move to generation 2
    del node
    return found


@pytest.fixture
def collectors() -> Iterator[list[ScheduledCollector]]:
    started: list[ScheduledCollector] = []
    thresholds = gc.get_threshold()
    yield started
    for collector in started:
        collector.stop()
    gc.unfreeze()
    assert gc.get_threshold() == thresholds


def test_start_freezes_what_is_loaded_and_stops_automatic_full_collections(collectors):
    collector = ScheduledCollector(full_seconds=0)
    collectors.append(collector)
    young, middle, oldest = gc.get_threshold()

    collector.start()

    assert gc.get_freeze_count() > 0
    assert gc.get_threshold() == (young, middle, NEVER)
    cycle = old_cycle()
    # Far more live allocations than trigger every generation's automatic collection by default.
    kept = [[] for _ in range(young * middle * (oldest + 2) * 10)]
    assert cycle() is not None
    del kept
    collector.stop()
    assert gc.get_threshold() == (young, middle, oldest)


def test_young_cycles_are_still_collected_automatically(collectors):
    collector = ScheduledCollector(full_seconds=0)
    collectors.append(collector)
    collector.start()
    node = Node()
    cycle = weakref.ref(node)
    del node

    kept = [[] for _ in range(gc.get_threshold()[0] * 3)]

    assert cycle() is None
    del kept


def test_young_generations_are_collected_on_schedule_when_allocations_do_not_trigger_it():
    # A steady fleet frees about as many objects as it allocates, so CPython's count never starts a young
    # collection; here a threshold nothing reaches stands for that.
    thresholds = gc.get_threshold()
    gc.set_threshold(2**30, thresholds[1], thresholds[2])
    collector = ScheduledCollector(full_seconds=0)
    try:
        collector.start()
        node = Node()
        cycle = weakref.ref(node)
        del node

        deadline = time.monotonic() + 5
        while cycle() is not None:
            assert time.monotonic() < deadline, "no young collection within 5 s"
            time.sleep(0.02)
    finally:
        collector.stop()
        gc.unfreeze()
        gc.set_threshold(*thresholds)


def test_a_full_collection_reclaims_old_cyclic_garbage_and_freezes_again(collectors):
    collector = ScheduledCollector(full_seconds=0)
    collectors.append(collector)
    collector.start()
    cycle = old_cycle()

    collector.collect_all()

    assert cycle() is None
    assert gc.get_freeze_count() > 0


def test_full_collections_come_every_full_seconds(collectors):
    collector = ScheduledCollector(full_seconds=0.2)
    collectors.append(collector)
    collector.start()
    cycle = old_cycle()

    deadline = time.monotonic() + 5
    while cycle() is not None:
        assert time.monotonic() < deadline, "no full collection within 5 s"
        time.sleep(0.05)
