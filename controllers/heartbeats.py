"""The heartbeat hot path: coalesce beats in memory, write them in one set-based statement per interval.

A region of 20,000 MCs beating every 10 s sends about 2,000 heartbeats a second. One UPDATE per heartbeat is bound
by Python and commit costs per call; one set-based UPDATE (the batch as one JSON document) for every member that
beat during the last HEARTBEAT_FLUSH_INTERVAL_MS costs about as much as a single row. So a beat that changes nothing
but counters and liveness is kept in memory (the latest values per member; a fast heartbeat does not erase the CPU
and memory of a comprehensive one still waiting) and acknowledged at once; a flush thread writes the batch
(controllers.services.beats.beats_flush, `last_heartbeat_at` = the database's now()).

A beat is written before it is acknowledged (with the other such beats waiting at that moment, in one
transaction: the method's writer, controllers.grpc.batching) when it may change the member's health:
its report would move the state this process last saw (pending -> healthy, DEGRADED, DRAINING, UNHEALTHY, back
to healthy), or the member is `pending` or `unhealthy` (the recovery gate counts every good beat). Such a write
commits the state change with its transition, audit and outbox rows before the answer. Nothing else makes a beat
synchronous: in particular not a long silence (the flush applies every beat to the row's state as the database
has it, so a member the sweep marked meanwhile goes through the recovery gate all the same), because a rule that
wrote more per call the slower the server answered would turn an overload into a collapse.

Owners: a member belongs to the credential that registered it (controllers.services.ownership). The process keeps
each member's owner beside its known state, so the in-memory path refuses nothing and queries nothing: a beat from
the owner it knows is coalesced, any other beat takes the slow path, which loads the member (claiming it if it has
no owner yet) and answers PERMISSION_DENIED, with an audit row, when another credential owns it. After an
operator moves a member to another credential, this process learns it the way it learns of an operator's drain:
the next flush of a beat from the old owner does not write it (the flush's compare-and-set includes the owner) and
drops what the process knew of the member; the old owner's next beat is refused. Beats acknowledged in between
(at most one flush interval) are discarded.

Unknown members: a cache of known ids (loaded from the database by the flush thread, and asked of the database
for an id it lacks, so a member registered by another process works at once) answers NOT_FOUND when the
database has no row either. A member deleted by an operator is dropped from the cache by the next flush that
finds no row for it; its later beats get NOT_FOUND (a beat in between is acknowledged and discarded).

What an acknowledged heartbeat guarantees if this process dies:
- a health state change it caused is durable (committed before the answer);
- its liveness and counters may be lost for at most one flush interval (plus the time a flush is failing:
  during a database outage the latest values stay in memory and every interval retries). The next beat, 10 s
  later to any GC process, writes them again; the stale threshold (30 s) is three beats wide, so one lost
  interval never makes a member stale.
- A state change made by the flush itself (rare: the database says a state this process did not know, e.g. an
  operator marked the MC unhealthy and its next beat counts toward recovery) commits with the flush.

The Redis capacity hash of each controller (`controller:{id}:capacity`, a TTL of 5 minutes, refreshed by every
beat) is written after every database write of beats, flush or synchronous, by a script call doing HSET +
EXPIRE per hash (Redis 6.2 has no per-field TTL; controllers.capacity_cache says why a script and not a
pipeline). The values of a steady beat's row come back with the flush's statement; the rows of the other beats
(state changes, the recovery gate, members gone) are read as they are after the commit. It is a cache: when
Redis does not answer (socket timeout REDIS_SOCKET_TIMEOUT_SECONDS) the beats are written all the same, one
warning is logged, and refreshes pause for CAPACITY_CACHE_RETRY_SECONDS, so an outage costs a flush at most one
timeout per pause.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Collection, Sequence

import redis
from django.conf import settings
from django.db import DatabaseError, InterfaceError, OperationalError, close_old_connections, connection

from controllers.capacity_cache import capacity_cache_refresh, capacity_cache_write
from controllers.health_rules import beat_is_steady
from controllers.members import CONTROLLERS, HANDLERS, MemberKind
from controllers.services.beats import Beat, beats_flush, beats_record, members_health
from controllers.services.ownership import member_access_refuse, member_claim
from darktower.errors import NotFound
from darktower.metrics import HEARTBEAT_FLUSH_DURATION, HEARTBEAT_FLUSHES
from darktower.redis import redis_client

logger = logging.getLogger(__name__)

# After a failed capacity-cache refresh, refreshes pause this long (the hashes live 300 s; the next beat of each
# controller, 10 s apart, refreshes its hash once Redis is back).
CAPACITY_CACHE_RETRY_SECONDS = 5.0


def _merge(older: Beat | None, newer: Beat) -> Beat:
    """The newer beat, keeping values of the older one that the newer does not carry (None)."""
    if older is None:
        return newer
    values = dict(older.values)
    values.update({column: value for column, value in newer.values.items() if value is not None})
    return Beat(newer.member_id, newer.reported, values, newer.received_at, newer.client_id)


class _Waiting:
    """A beat whose caller waits for it to be written (HeartbeatRecorder._write_now), and then its outcome."""

    __slots__ = ("beat", "done", "error", "missing")

    def __init__(self, beat: Beat) -> None:
        self.beat = beat
        self.done = False
        self.missing = False  # no row (or not the sender's): NotFound
        self.error: BaseException | None = None

    def finish(self, *, missing: bool = False, error: BaseException | None = None) -> None:
        self.missing, self.error = missing, error
        self.done = True


class HeartbeatRecorder:
    """Coalesces the beats of one member kind (controllers or media handlers) of this process."""

    def __init__(self, kind: MemberKind) -> None:
        self.kind = kind
        self._lock = threading.Lock()  # the two dicts below
        # Serialises database writes of this recorder: a synchronous beat never races a flush that holds an
        # older beat of the same member, so the newest report is always the one that lands last.
        self._write_lock = threading.Lock()
        self._known: dict[str, str] = {}  # member id -> the health state this process last saw
        self._owners: dict[str, str | None] = {}  # member id -> the client id owning it, as last loaded
        self._pending: dict[str, Beat] = {}
        self._waiting: list[_Waiting] = []  # beats whose callers wait for the next synchronous write
        self._loaded = False
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        # The capacity cache (controllers only); both read and written under _write_lock.
        self._cache_paused_until = 0.0
        self._cache_failing = False

    # --- the request path ----------------------------------------------------------------------------------

    def record(self, beat: Beat) -> None:
        """Take one validated beat; NotFound when the member is not registered, PermissionDenied (audited) when
        another credential owns it."""
        if not self._take(beat):
            self._write_now(beat)

    def record_many(self, beats: Sequence[Beat]) -> list[BaseException | None]:
        """record() for beats that arrived together (a writer's batch, controllers.grpc.batching): the ones that
        must be written before their answer are written in one transaction. For each beat, None when it is
        recorded, else the error that refuses it alone (NotFound, PermissionDenied, a row the database refuses);
        an unreachable database refuses them all (raised)."""
        outcomes: list[BaseException | None] = [None] * len(beats)
        waiting: list[tuple[int, _Waiting]] = []
        for index, beat in enumerate(beats):
            try:
                if not self._take(beat):
                    waiting.append((index, _Waiting(beat)))
            except (OperationalError, InterfaceError):
                raise
            except Exception as exc:  # this beat's refusal; mapped by the guard
                outcomes[index] = exc
        if waiting:
            with self._write_lock:
                self._write_waiting([entry for _, entry in waiting])
        for index, entry in waiting:
            if entry.error is not None:
                if isinstance(entry.error, OperationalError | InterfaceError):
                    raise entry.error
                outcomes[index] = entry.error
            elif entry.missing:
                outcomes[index] = NotFound(f"unknown {self.kind.label}; register first")
        return outcomes

    def _take(self, beat: Beat) -> bool:
        """Coalesce `beat` when it needs no synchronous write (after a lookup if the member or its owner is not
        known): True. False: it may change the member's health, write it before answering."""
        if self.record_in_memory(beat):
            return True
        with self._lock:
            known = self._known.get(beat.member_id)
            owner = self._owners.get(beat.member_id)
        if known is None or (beat.client_id is not None and owner != beat.client_id):
            known = self._lookup(beat)
        if not beat_is_steady(known, beat.reported):
            return False
        with self._lock:
            self._pending[beat.member_id] = _merge(self._pending.get(beat.member_id), beat)
        return True

    def record_in_memory(self, beat: Beat) -> bool:
        """Coalesce `beat` if that needs no database (its member is known and the beat cannot change its
        state): True. False when it needs a lookup or a synchronous write: then call record(), which blocks, so
        an event loop calls this first and hands the False cases to a worker thread."""
        self._ensure_running()
        with self._lock:
            known = self._known.get(beat.member_id)
            if not beat_is_steady(known, beat.reported) or self._owners.get(beat.member_id) != beat.client_id:
                return False
            self._pending[beat.member_id] = _merge(self._pending.get(beat.member_id), beat)
        return True

    def remember(self, member_id: str, health_status: str, owner: str | None = None) -> None:
        """A registration in this process: its state (and, given, its owner) is known without a query."""
        with self._lock:
            self._known[member_id] = health_status
            if owner is not None:
                self._owners[member_id] = owner

    def _lookup(self, beat: Beat) -> str:
        """Load the member's state and owner; claim it for the beat's sender if it has no owner; refuse the beat
        (audited) if another credential owns it."""
        member_id, client_id = beat.member_id, beat.client_id
        found = members_health(kind=self.kind, member_ids=[member_id]).get(member_id)
        if found is None:
            raise NotFound(f"unknown {self.kind.label}; register first")
        state, owner = found
        if owner is None and client_id is not None:
            owner = member_claim(kind=self.kind, member_id=member_id, client_id=client_id, via="heartbeat")
        with self._lock:
            self._owners[member_id] = owner
            known = self._known.setdefault(member_id, state)
        if client_id is not None and owner != client_id:
            raise member_access_refuse(kind=self.kind, member_id=member_id, client_id=client_id,
                                       owner_client_id=owner, action="heartbeat")
        return known

    def _write_now(self, beat: Beat) -> None:
        """Write `beat` before it is answered, in the next write of this recorder together with every other beat
        that waits for one (group commit): a fleet's first beats after a restart cost one transaction per write,
        not one each. The first waiting thread to get the write lock writes them all; the others find their beat
        written when they get it."""
        waiting = _Waiting(beat)
        with self._lock:
            self._waiting.append(waiting)
        while not waiting.done:
            with self._write_lock:
                if not waiting.done:
                    with self._lock:
                        batch, self._waiting = self._waiting, []
                    self._write_waiting(batch)
        if waiting.error is not None:
            raise waiting.error
        if waiting.missing:
            raise NotFound(f"unknown {self.kind.label}; register first")

    def _write_waiting(self, batch: list[_Waiting]) -> None:
        """Write the beats of `batch` in one transaction and tell each its outcome; called under _write_lock.

        When the database is unreachable every beat of the batch fails (its callers answer UNAVAILABLE and send it
        again) and the beats acknowledged before them go back to the pending set. Any other database error is one
        beat the database refuses (a value out of a column's range): the batch is written again one member at a
        time, so that only that member's callers get the error."""
        by_member: dict[str, list[_Waiting]] = {}
        for waiting in batch:
            by_member.setdefault(waiting.beat.member_id, []).append(waiting)
        try:
            self._write_members(by_member)
        except (OperationalError, InterfaceError) as exc:
            for waiting in batch:
                waiting.finish(error=exc)
        except DatabaseError:
            for member_id, waitings in by_member.items():
                try:
                    self._write_members({member_id: waitings})
                except DatabaseError as exc:
                    for waiting in waitings:
                        waiting.finish(error=exc)

    def _write_members(self, by_member: dict[str, list[_Waiting]]) -> None:
        """One transaction for the waiting beats of these members (merged per member, in arrival order, with the
        beat acknowledged and still pending before them); tell each waiting beat its outcome."""
        with self._lock:
            acknowledged = {member_id: beat for member_id in by_member
                            if (beat := self._pending.pop(member_id, None)) is not None}
        beats = []
        for member_id, waitings in by_member.items():
            merged = acknowledged.get(member_id)
            for waiting in waitings:
                merged = _merge(merged, waiting.beat)
            assert merged is not None
            beats.append(merged)
        try:
            outcomes = beats_record(kind=self.kind, beats=beats)
        except DatabaseError:
            # Not written: the beats acknowledged before must not be lost with it; back to the pending set.
            if acknowledged:
                self._requeue(acknowledged)
            raise
        written = {outcome.member_id: outcome.to_status for outcome in outcomes}
        with self._lock:
            for member_id in by_member:
                if member_id in written:
                    self._known[member_id] = written[member_id]
                else:
                    self._known.pop(member_id, None)
                    self._owners.pop(member_id, None)
        self._refresh_capacity(list(written))
        for member_id, waitings in by_member.items():
            for waiting in waitings:
                waiting.finish(missing=member_id not in written)

    def waiting_count(self) -> int:
        """Beats waiting for a synchronous write."""
        with self._lock:
            return len(self._waiting)

    # --- the flush ---------------------------------------------------------------------------------------------

    def flush(self) -> int:
        """Write every pending beat in one statement; returns how many.

        When the database is unreachable the beats go back to the pending set (newer ones win) and the error
        propagates, for the next interval to retry. Any other database error means the batch itself is
        refused (it would be refused forever): it is dropped and logged, so one bad row cannot stall liveness
        for the whole fleet.
        """
        with self._write_lock:
            with self._lock:
                batch, self._pending = self._pending, {}
                known = {member_id: self._known.get(member_id) for member_id in batch}
            if not batch:
                return 0
            started = time.perf_counter()
            try:
                written = beats_flush(kind=self.kind, beats=list(batch.values()), known=known)
            except (OperationalError, InterfaceError):
                self._requeue(batch)
                HEARTBEAT_FLUSHES.labels(self.kind.target_type, "failed").inc()
                raise
            except DatabaseError:
                logger.exception("heartbeat flush refused; dropped %d %s beats", len(batch), self.kind.target_type)
                HEARTBEAT_FLUSHES.labels(self.kind.target_type, "refused").inc()
                return 0
            # Only what differs from `known` comes back (a steady fleet's flush: nothing).
            with self._lock:
                for member_id in written.missing:
                    self._known.pop(member_id, None)
                    self._owners.pop(member_id, None)
                for outcome in written.outcomes:
                    if outcome.member_id in self._known:
                        self._known[outcome.member_id] = outcome.to_status
            # The steady members' hashes came with the write; the others' are read back by key.
            self._refresh_capacity(
                [*(outcome.member_id for outcome in written.outcomes), *written.missing], written.capacity_documents
            )
            HEARTBEAT_FLUSHES.labels(self.kind.target_type, "written").inc()
            HEARTBEAT_FLUSH_DURATION.labels(self.kind.target_type).observe(time.perf_counter() - started)
        return len(batch)

    def _refresh_capacity(self, member_ids: Collection[str], documents: Sequence[str] = ()) -> None:
        """Refresh the capacity hashes of the controllers of a write: `documents` as the write returned them, then
        `member_ids` from their rows (one without a row loses its hash); fail open (see the module docstring).
        Called under _write_lock, so a newer write's hash is never overwritten by an older one's."""
        if self.kind is not CONTROLLERS or not (member_ids or documents) or time.monotonic() < self._cache_paused_until:
            return
        try:
            client = redis_client()
            refused = capacity_cache_write(documents=documents, client=client)
            refused += capacity_cache_refresh(controller_ids=member_ids, client=client)
        except (redis.RedisError, DatabaseError) as exc:
            # DatabaseError: the rows' read failed after their write committed; the beats are safe either way.
            self._cache_paused_until = time.monotonic() + CAPACITY_CACHE_RETRY_SECONDS
            if not self._cache_failing:
                self._cache_failing = True
                logger.warning(
                    "capacity cache refresh failed (%s); heartbeats are written without it, retrying every %.0f s",
                    type(exc).__name__, CAPACITY_CACHE_RETRY_SECONDS,
                )
            return
        if refused:
            logger.warning("capacity cache: Redis refused %d hashes (a key of another type?)", refused)
        if self._cache_failing:
            self._cache_failing = False
            logger.warning("capacity cache refresh recovered")

    def _requeue(self, beats: dict[str, Beat]) -> None:
        """Put beats that could not be written back in the pending set; a newer beat already there wins."""
        with self._lock:
            for member_id, beat in beats.items():
                newer = self._pending.get(member_id)
                self._pending[member_id] = beat if newer is None else _merge(beat, newer)

    def pending_count(self) -> int:
        with self._lock:
            return len(self._pending)

    def _ensure_running(self) -> None:
        if self._thread is not None:
            return
        with self._lock:
            if self._thread is not None:
                return
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"heartbeat-flush-{self.kind.table}", daemon=True
            )
            self._thread.start()

    def _load(self) -> None:
        members = members_health(kind=self.kind)
        with self._lock:
            for member_id, (health_status, owner) in members.items():
                self._known.setdefault(member_id, health_status)
                self._owners.setdefault(member_id, owner)
        self._loaded = True

    def _run(self) -> None:
        interval = settings.HEARTBEAT_FLUSH_INTERVAL_MS / 1000
        failing_since: float | None = None
        while not self._stop.wait(interval):
            close_old_connections()
            try:
                if not self._loaded:
                    self._load()
                self.flush()
            except DatabaseError as exc:
                # Keep going: the beats are back in the pending set and the next interval retries.
                if failing_since is None:
                    failing_since = time.monotonic()
                    logger.warning(
                        "heartbeat flush failed (%s); keeping %d %s beats in memory and retrying",
                        type(exc).__name__, self.pending_count(), self.kind.target_type,
                    )
                connection.close()
            else:
                if failing_since is not None:
                    logger.warning(
                        "heartbeat flush recovered after %.1f s", time.monotonic() - failing_since
                    )
                    failing_since = None
        connection.close()

    def stop(self, *, timeout: float = 5.0) -> int:
        """Stop the flush thread and write what is pending (shutdown); returns how many beats were written."""
        thread, self._thread = self._thread, None
        if thread is not None:
            self._stop.set()
            thread.join(timeout)
        try:
            return self.flush()
        except DatabaseError:
            logger.error(
                "heartbeat flush at shutdown failed; %d %s beats lost (liveness only)",
                self.pending_count(), self.kind.target_type,
            )
            return 0


controller_heartbeats = HeartbeatRecorder(CONTROLLERS)
handler_load_reports = HeartbeatRecorder(HANDLERS)
RECORDERS = (controller_heartbeats, handler_load_reports)
# Exported at 0 from the start, so that an alert's increase() sees the first refused or failed flush.
for _recorder in RECORDERS:
    for _outcome in ("written", "failed", "refused"):
        HEARTBEAT_FLUSHES.labels(_recorder.kind.target_type, _outcome)


def unix_now() -> int:
    """The timestamp heartbeat answers carry: this server's time, whole Unix seconds."""
    return math.floor(time.time())
