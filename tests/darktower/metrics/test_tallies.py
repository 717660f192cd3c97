"""darktower.metrics tallies: the gRPC server's per-call counts are kept in memory and published in batches; what
a publish adds must equal what direct updates would have recorded, and nothing may be lost or counted twice."""

from __future__ import annotations

import threading

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram

from darktower.metrics import GRPC_BUCKETS, Tallies, TallyPublisher
from tests.faults.processes import wait_for

# On a bound, just above one, below the first, above the last (+Inf).
AMOUNTS = (0.001, 0.0010001, 0.0001, 0.03, 5.0, 7.5, 0.0005)


@pytest.fixture
def metrics():
    registry = CollectorRegistry()
    counter = Counter("t_calls", "calls", ["code"], registry=registry)
    histogram = Histogram("t_seconds", "latency", ["method"], buckets=GRPC_BUCKETS, registry=registry)
    return registry, counter, histogram


def samples(registry: CollectorRegistry, prefix: str) -> dict[tuple[str, tuple], float]:
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for metric in registry.collect() for sample in metric.samples if sample.name.startswith(prefix)}


def test_without_a_publisher_counts_reach_the_metric_at_once(metrics):
    registry, counter, histogram = metrics
    tallies = Tallies()

    tallies.count(counter.labels("OK"))
    tallies.observe(histogram.labels("/m"), 0.002)

    assert registry.get_sample_value("t_calls_total", {"code": "OK"}) == 1
    assert registry.get_sample_value("t_seconds_count", {"method": "/m"}) == 1


def test_published_tallies_equal_direct_updates(metrics):
    registry, counter, histogram = metrics
    direct_registry = CollectorRegistry()
    direct_counter = Counter("t_calls", "calls", ["code"], registry=direct_registry)
    direct_histogram = Histogram("t_seconds", "latency", ["method"], buckets=GRPC_BUCKETS, registry=direct_registry)
    tallies = Tallies()
    tallies.publishing = True

    for amount in AMOUNTS:
        tallies.observe(histogram.labels("/m"), amount)
        direct_histogram.labels("/m").observe(amount)
    tallies.count(counter.labels("OK"), 3)
    tallies.count(counter.labels("OK"))
    tallies.count(counter.labels("INTERNAL"))
    direct_counter.labels("OK").inc(4)
    direct_counter.labels("INTERNAL").inc()

    assert registry.get_sample_value("t_calls_total", {"code": "OK"}) == 0
    assert registry.get_sample_value("t_seconds_count", {"method": "/m"}) == 0
    tallies.publish()
    assert samples(registry, "t_") == samples(direct_registry, "t_")
    assert registry.get_sample_value("t_seconds_bucket", {"method": "/m", "le": "0.001"}) == 3
    assert registry.get_sample_value("t_seconds_bucket", {"method": "/m", "le": "+Inf"}) == len(AMOUNTS)

    tallies.publish()  # nothing new: nothing added twice
    assert samples(registry, "t_") == samples(direct_registry, "t_")


def test_counts_from_many_threads_are_all_published(metrics):
    registry, counter, histogram = metrics
    tallies = Tallies()
    tallies.publishing = True
    child, timed = counter.labels("OK"), histogram.labels("/m")

    def work() -> None:
        for _ in range(5_000):
            tallies.count(child)
            tallies.observe(timed, 0.002)

    publishing = threading.Event()

    def publish_meanwhile() -> None:
        while not publishing.is_set():
            tallies.publish()

    publisher = threading.Thread(target=publish_meanwhile)
    publisher.start()
    workers = [threading.Thread(target=work) for _ in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    publishing.set()
    publisher.join()
    tallies.publish()

    assert registry.get_sample_value("t_calls_total", {"code": "OK"}) == 20_000
    assert registry.get_sample_value("t_seconds_count", {"method": "/m"}) == 20_000


def test_the_publisher_thread_publishes_on_its_interval_and_the_rest_at_stop(metrics, monkeypatch):
    registry, counter, _ = metrics
    tallies = Tallies()
    monkeypatch.setattr("darktower.metrics.TALLIES", tallies)
    publisher = TallyPublisher(interval=0.05)
    publisher.start()
    try:
        assert tallies.publishing
        tallies.count(counter.labels("OK"))
        assert registry.get_sample_value("t_calls_total", {"code": "OK"}) == 0
        wait_for(lambda: registry.get_sample_value("t_calls_total", {"code": "OK"}) == 1, timeout=5,
                 what="the interval's publish")
    finally:
        tallies.count(counter.labels("OK"))
        publisher.stop()

    assert not tallies.publishing
    assert registry.get_sample_value("t_calls_total", {"code": "OK"}) == 2
    tallies.count(counter.labels("OK"))  # stopped: straight to the metric
    assert registry.get_sample_value("t_calls_total", {"code": "OK"}) == 3
