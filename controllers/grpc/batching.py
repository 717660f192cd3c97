"""Calls that wait for the database without holding a worker thread: registrations and beats that change health.

A fleet restarting sends tens of thousands of such calls within seconds. Served one per worker thread, each holds
its thread (and its connection) for a transaction of its own, and the calls beyond the threads queue behind them.
Here a call, validated and authenticated on the event loop, joins the calls waiting for its method's writer and
awaits a future. The writer (one thread per method) takes everything waiting when it is free, at most MAX_BATCH at
a time, writes it in one transaction and resolves the futures on the loop. So a restart costs a transaction per
write, not one per member; a waiting call costs a future, not a thread; and the worker threads stay free for the
calls that need them.

MAX_BATCH bounds the Python work of one write (building its statements, reading its rows): that work holds the
GIL that the event loop, serving a running fleet's beats, needs too.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from concurrent import futures
from typing import Any

from django.db import close_old_connections

# The calls one write takes at most.
MAX_BATCH = 500

# One method's write: (request, the caller's client id) for each call -> for each, its answer or the exception
# that refuses it (in the order given). An exception raised instead refuses every call of the write.
BatchWrite = Callable[[Sequence[tuple[Any, str]]], Sequence[Any]]


class BatchWriter:
    """The calls of one method waiting to be written, and the thread that writes them."""

    def __init__(self, name: str, write: BatchWrite, *, max_batch: int = MAX_BATCH) -> None:
        self.name = name
        self._write = write
        self._max_batch = max_batch
        self._lock = threading.Lock()  # _waiting and _running, shared by the loop and the writer thread
        self._waiting: list[tuple[tuple[Any, str], asyncio.Future[Any]]] = []
        self._running = False
        self.executor = futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"grpc-writer-{name}")

    async def submit(self, request: Any, client_id: str) -> Any:
        """The answer to one call once the write that took it committed; its exception when it was refused."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        with self._lock:
            self._waiting.append(((request, client_id), future))
            start, self._running = not self._running, True
        if start:
            self.executor.submit(self._run, loop)
        return await future

    def waiting(self) -> int:
        with self._lock:
            return len(self._waiting)

    def _run(self, loop: asyncio.AbstractEventLoop) -> None:
        """The writer: write what waits, a batch at a time, until nothing does."""
        while True:
            with self._lock:
                batch = self._waiting[: self._max_batch]
                del self._waiting[: self._max_batch]
                if not batch:
                    self._running = False
                    return
            # A call whose caller is gone (deadline, cancellation) is not written: it would be answered to nobody.
            batch = [(call, future) for call, future in batch if not future.done()]
            if not batch:
                continue
            results: Sequence[Any] | BaseException
            close_old_connections()
            try:
                results = self._write([call for call, _ in batch])
            except Exception as exc:  # every call of the write fails with it; mapped by the guard
                results = exc
            finally:
                close_old_connections()
            loop.call_soon_threadsafe(_resolve, [future for _, future in batch], results)

    def stop(self) -> None:
        """Wait for the write in progress; call once no call can arrive any more."""
        self.executor.shutdown(wait=True)


def _resolve(waiting: list[asyncio.Future[Any]], results: Sequence[Any] | BaseException) -> None:
    for index, future in enumerate(waiting):
        if future.done():
            continue
        result = results if isinstance(results, BaseException) else results[index]
        if isinstance(result, BaseException):
            future.set_exception(result)
        else:
            future.set_result(result)
