"""The database backend (settings.DATABASES ENGINE): Django's PostgreSQL backend, whose connection pool checks a
connection before lending it only when the connection has been idle for DB_POOL_CHECK_IDLE_SECONDS or more.

A check is an empty query: a round trip on every request, to learn what the request's own first statement learns
anyway. A connection given back less than the bound ago was working then, and is lent as it is; one idle longer
(a server restart, a failover or a proxy's idle timeout may have ended it since) is checked first, and a dead one
is dropped and another taken, so that it never fails a request. If the server goes away within the bound, the
request that gets such a connection fails as when a connection is lost under a query (503 with Retry-After,
nothing written), and the pool drops the connection when it is given back.
"""

from __future__ import annotations

import threading
import time
import weakref
from typing import Any

from django.conf import settings
from django.db.backends.postgresql import base

# The pool's connections, by when each was last given back (or made): the checkout decides from this whether to
# check. Shared by every thread's DatabaseWrapper, as the pool is.
_idle_since: weakref.WeakKeyDictionary[Any, float] = weakref.WeakKeyDictionary()
_idle_lock = threading.Lock()


def _stamp(connection: Any) -> None:
    with _idle_lock:
        _idle_since[connection] = time.monotonic()


def _needs_check(connection: Any) -> bool:
    with _idle_lock:
        since = _idle_since.get(connection)
    return since is None or time.monotonic() - since >= settings.DB_POOL_CHECK_IDLE_SECONDS


# django-stubs describe neither the pool nor the connection hooks this class extends.
_PostgresWrapper: Any = base.DatabaseWrapper


class DatabaseWrapper(_PostgresWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        pool = self.pool
        if pool is None:
            return connection
        # At most one try more than the pool holds: all its connections may have died together (a server restart).
        for _ in range(pool.max_size + 1):
            if not _needs_check(connection):
                return connection
            try:
                pool.check_connection(connection)
            except Exception:
                # Whatever the failure, this connection is not lent: closed, the pool drops it on return and opens
                # another in its place.
                connection.close()
                pool.putconn(connection)
                connection = super().get_new_connection(conn_params)
            else:
                _stamp(connection)
        return connection

    def _configure_connection(self, connection: Any) -> bool:
        # The pool calls this on each connection it opens: a new connection has just been seen working.
        _stamp(connection)
        return bool(super()._configure_connection(connection))

    def _close(self) -> None:
        if self.pool is not None and self.connection is not None:
            _stamp(self.connection)
        super()._close()
