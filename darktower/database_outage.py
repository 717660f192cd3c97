"""When the database says no: which errors mean "no connection", and one warning per outage instead of one per
request.

A connection failure is not a bug in the request: PostgreSQL refused a new connection (too many clients, starting
up, shutting down), a connection died under a query (server restart, network), or the pool had no connection to
lend within its timeout. Every transport answers it as "unavailable, retry" (REST 503 with Retry-After, gRPC
UNAVAILABLE); nothing was written, because the transaction that needed the connection never committed.

An outage, per process: it starts at the first connection failure while none is open (one WARNING), and ends at
the first request afterwards that held a working connection and finished without a connection failure (one INFO
line with its length and how many requests were refused meanwhile). Every process (each gunicorn worker, the gRPC
server) decides for itself, so a deployment logs one warning per process per outage.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from django.db import InterfaceError, OperationalError, connection

logger = logging.getLogger(__name__)

# What clients are told to wait before retrying: a restart or a failover takes seconds, a pool wait less.
RETRY_AFTER_SECONDS = 2

# SQLSTATEs that say the server will not (or no longer) serve this connection: class 08 (connection exception),
# too_many_connections, admin_shutdown, crash_shutdown, cannot_connect_now (starting up or in recovery).
_CONNECTION_SQLSTATES = frozenset({"53300", "57P01", "57P02", "57P03"})


def is_connection_failure(exc: BaseException) -> bool:
    """Whether `exc` (as Django raises it) means no usable database connection, rather than a refused statement."""
    if isinstance(exc, InterfaceError):  # a connection Django or psycopg already knows to be closed
        return True
    if not isinstance(exc, OperationalError):
        return False
    sqlstate = getattr(exc.__cause__, "sqlstate", None)
    if sqlstate is None:
        # Failed on the client's side, with no answer from a server: connection refused or reset, "server
        # closed the connection unexpectedly", the pool's checkout timeout.
        return True
    return sqlstate.startswith("08") or sqlstate in _CONNECTION_SQLSTATES


class DatabaseOutage:
    """This process's view of whether the database is away; thread-safe."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._started: float | None = None
        self._refused = 0

    @property
    def open(self) -> bool:
        return self._started is not None

    def refused(self, exc: BaseException) -> None:
        """A request could not get or keep a connection: count it; the first of an outage logs the warning."""
        with self._lock:
            first = self._started is None
            if first:
                self._started = self._clock()
                self._refused = 0
            self._refused += 1
        if first:
            # The exception's class and SQLSTATE only: its message may carry the server's address.
            sqlstate = getattr(exc.__cause__, "sqlstate", None)
            logger.warning(
                "database unavailable (%s%s): answering 'unavailable, retry' until a request reaches it again",
                type(exc.__cause__ or exc).__name__, f", SQLSTATE {sqlstate}" if sqlstate else "",
            )

    def reached(self) -> None:
        """A request held a working connection and finished: the outage, if one is open, is over."""
        if self._started is None:  # the common case, without the lock
            return
        with self._lock:
            if self._started is None:
                return
            lasted, refused = self._clock() - self._started, self._refused
            self._started = None
        logger.info("database reachable again after %.1f s; %d requests were refused meanwhile", lasted, refused)

    def reached_if_connected(self) -> None:
        """End an open outage if this thread's connection answers. Probed only while an outage is open, so the
        extra round trip costs nothing in normal operation."""
        if self._started is not None and connection.connection is not None and connection.is_usable():
            self.reached()


# The one tracker of this process.
database_outage = DatabaseOutage()
