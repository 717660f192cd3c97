"""How the gRPC server keeps Python's cyclic garbage collector from stalling its event loop.

A full collection walks every object the process tracks, holding the GIL. A heartbeat stream keeps some 70
tracked objects for as long as it is open and some 13 more that each beat replaces (they live one heartbeat
interval, long enough to reach the oldest generation). With thousands of streams in a process, CPython's
automatic full collections stall every call for as long as they run, and they come at moments nobody chooses
(bench/FIGURES.md has the figures). Python 3.11's collector is not incremental, so the server keeps the young
collections and schedules the full ones:

- what is loaded at start (Django, the apps, grpc: ~100,000 objects) is frozen (gc.freeze), out of sight;
- generations 0 and 1 are collected automatically as usual, and also every YOUNG_SECONDS (below), so that a
  pass walks only recent objects and stays short;
- generation 2 is never collected automatically: everything is collected once every `full_seconds`, the one
  long pause, reclaiming the cyclic garbage that reached the oldest generation meanwhile. Steady heartbeats
  leave almost none, so memory does not grow in between.
"""

from __future__ import annotations

import gc
import logging
import threading
import time

logger = logging.getLogger(__name__)

# A generation-2 threshold that the count of generation-1 collections never reaches.
NEVER = 2**31 - 1
# CPython starts a young collection when allocations minus deallocations pass a threshold. A steady fleet frees
# about as many objects (beats received one interval ago) as it allocates, so that count hardly moves while
# generation 0 keeps every object made since its last collection: the collection that a burst finally triggers
# (the heartbeat flush's rows) walks them all, holding the GIL. Collected every YOUNG_SECONDS, the young
# generations hold only that long's allocations, so a pass stays short.
YOUNG_SECONDS = 0.1


class ScheduledCollector:
    """The collector policy of a server process: start() once serving is about to begin, stop() at the end."""

    def __init__(self, *, full_seconds: float) -> None:
        self.full_seconds = full_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="gc-scheduled", daemon=True)
        self._thresholds = gc.get_threshold()

    def start(self) -> None:
        gc.collect()
        gc.freeze()
        gc.set_threshold(self._thresholds[0], self._thresholds[1], NEVER)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        gc.set_threshold(*self._thresholds)

    def collect_all(self) -> None:
        """One full collection, frozen objects included (the start's freeze is redone afterwards)."""
        started = time.perf_counter()
        gc.unfreeze()
        collected = gc.collect()
        gc.freeze()
        logger.info("full garbage collection: %d unreachable objects in %.0f ms", collected,
                    (time.perf_counter() - started) * 1000)

    def _run(self) -> None:
        full_at = time.monotonic() + self.full_seconds
        while not self._stop.wait(YOUNG_SECONDS):
            if self.full_seconds > 0 and time.monotonic() >= full_at:
                self.collect_all()
                full_at = time.monotonic() + self.full_seconds
            else:
                gc.collect(1)
