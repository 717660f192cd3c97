"""Admission of the calls that wait for the database: registrations and beats that change a member's health waiting
for their method's writer (controllers.grpc.batching), and the calls that need a worker thread.

A fleet restarting sends tens of thousands of such calls within seconds. A waiting call costs a future, not a
thread, so the limit can be as large as the fleet that restarts at once; but queued without bound, calls would wait
past their deadlines, their callers send them again, and the writers spend their time on calls nobody waits for any
more. So at most GRPC_MAX_QUEUED_CALLS wait; a call beyond that is refused at once (RESOURCE_EXHAUSTED) with a
retry-after that spreads the refused callers over the time the writes need for them: each is told a second drawn at
random between 1 and (calls refused during the last second / calls finished a second, as measured), so that they
come back at about the rate they are written. A well-behaved MC obeys it; the heartbeats the process answers on its
event loop (a fleet already running) are not affected by any of this.

Used on the event loop only (MethodGuard.serve enters and leaves there), so it needs no lock.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

# The retry-after of a refused call stays within this many seconds, however long the backlog looks.
MAX_RETRY_AFTER_SECONDS = 120


class Admission:
    """Counts the calls waiting for or running in a worker, and the calls refused and finished per second."""

    def __init__(self, *, clock: Callable[[], float] = time.monotonic, rng: random.Random | None = None) -> None:
        self._clock = clock
        self._rng = rng or random.Random()  # noqa: S311 (spreading retries, not a secret)
        self.waiting = 0
        # Calls finished per second, a moving average over the seconds the workers worked; None until measured
        # (then the limit stands for it: the workers are assumed to serve their queue in a second).
        self._rate: float | None = None
        self._second = math.floor(clock())
        self._finished = 0  # in the current second
        self._refused = 0  # in the current second
        self._refused_before = 0  # in the second before

    def _tick(self) -> None:
        second = math.floor(self._clock())
        if second == self._second:
            return
        elapsed = second - self._second
        # A second without calls says nothing of the workers' rate: the average moves only while they work.
        if self._finished:
            measured = self._finished / elapsed
            self._rate = max(1.0, measured if self._rate is None else 0.5 * self._rate + 0.5 * measured)
        self._refused_before = self._refused if elapsed == 1 else 0
        self._second, self._finished, self._refused = second, 0, 0

    def enter(self, *, limit: int | None) -> int:
        """0 when the call is admitted (call leave() when it is done); else the seconds after which to retry.
        `limit` None: admitted whatever waits (and counted)."""
        self._tick()
        if limit is None or self.waiting < limit:
            self.waiting += 1
            return 0
        self._refused += 1
        # The callers refused in the last second, the one being refused included, come back spread over the time
        # the workers need to serve that many.
        backlog = self._refused + self._refused_before
        rate = self._rate if self._rate is not None else float(limit)
        spread = min(MAX_RETRY_AFTER_SECONDS, max(1, math.ceil(backlog / rate)))
        return 1 + self._rng.randrange(spread)

    def leave(self) -> None:
        self._tick()
        self.waiting -= 1
        self._finished += 1
