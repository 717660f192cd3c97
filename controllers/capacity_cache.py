"""The controllers' capacity cache: one Redis hash per meeting controller, `controller:{id}:capacity`.

Written from the controller's row as it is now, so out-of-order or repeated writes cannot leave an old state
behind: by the outbox relay with every event about a controller (aggregate type `controller`, or
`meeting_controller` as operator actions spell it; registered with audit.relay by ControllersConfig.ready()),
and by the heartbeat flush (`capacity_cache_write` with the hashes its statement returns,
`capacity_cache_refresh` for the rest), so a steadily healthy controller's hash never expires.

The relay writes each hash with its own pipelined commands (a command error fails only its event); the
heartbeat flush writes a whole batch with one Lua script call: the cost of a pipeline of HSET + EXPIRE per
controller is Python packing two commands per controller, not Redis.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable
from typing import Any

import redis

from darktower.db import server_bound_cursor

CAPACITY_KEY = "controller:{controller_id}:capacity"
CAPACITY_TTL_SECONDS = 300
# The sweep and the drain deadline write `controller`, the operator's mark-unhealthy `meeting_controller`.
CONTROLLER_AGGREGATES = frozenset({"controller", "meeting_controller"})
# The hash's fields, in the order of capacity_values_sql and of the script's rows.
CAPACITY_FIELDS = (
    "max_meetings", "current_meetings", "max_participants", "current_participants", "health", "last_update",
)


def capacity_values_sql(row: str) -> str:
    """The hash's values of the controller row named `row` in a query, as one text array in CAPACITY_FIELDS
    order; last_update is the last heartbeat in whole Unix seconds (the database's clock). The values come as
    the hash's strings, so the flush does not convert them in Python (bench/FIGURES.md)."""
    return (
        f"ARRAY[{row}.max_meetings::text, {row}.current_meetings::text, {row}.max_participants::text, "
        f"{row}.current_participants::text, {row}.health_status::text, "
        f"floor(extract(epoch FROM {row}.last_heartbeat_at))::bigint::text]"
    )


_CAPACITY_VALUES = capacity_values_sql("meeting_controllers")
# By primary key.
_CAPACITY_SQL = f"SELECT controller_id, {_CAPACITY_VALUES} FROM meeting_controllers WHERE controller_id = ANY(%s)"  # noqa: S608
# The heartbeat flush's form: the ids in and the hashes out as one JSON document each ([id, values] per id, in
# the order given; values null when the controller is gone), which go to the script as they are: building,
# packing and parsing a value per controller in Python would cost the flush CPU while holding the GIL that the
# event loop serving beats waits for (bench/FIGURES.md). LATERAL: one primary-key probe per id, never a scan.
_CAPACITY_DOCUMENT_SQL = f"""
SELECT coalesce(json_agg(json_build_array(i.id, c.hash_values) ORDER BY i.n), '[]')::text
FROM jsonb_array_elements_text(%s::jsonb) WITH ORDINALITY AS i(id, n)
LEFT JOIN LATERAL (SELECT {_CAPACITY_VALUES} AS hash_values FROM meeting_controllers WHERE controller_id = i.id) c
  ON true
"""  # noqa: S608 (constants only)
# Controllers per script call (and per document): a call blocks Redis while it runs, longer the more hashes.
CAPACITY_SCRIPT_BATCH = 1000
# ARGV[1]: the TTL; ARGV[2], ARGV[3]: what comes before and after the id in a hash's key (CAPACITY_KEY);
# ARGV[4]: a capacity document ([id, values or null] per controller, values as capacity_values_sql orders them),
# as _CAPACITY_DOCUMENT_SQL or the heartbeat flush's statement builds it. The keys are named by the document,
# not by KEYS: the hashes live on the deployment's one Redis (not a Cluster), and redis-py would pack each key
# in Python, per key. pcall: a key of the wrong type fails alone. Returns how many keys failed.
_CAPACITY_SCRIPT = """
local ttl = tonumber(ARGV[1])
local rows = cjson.decode(ARGV[4])
local failed = 0
for _, entry in ipairs(rows) do
  local key = ARGV[2] .. entry[1] .. ARGV[3]
  local row = entry[2]
  local reply
  if row == cjson.null then
    reply = redis.pcall('DEL', key)
  else
    reply = redis.pcall('HSET', key, 'max_meetings', row[1], 'current_meetings', row[2], 'max_participants', row[3],
                        'current_participants', row[4], 'health', row[5], 'last_update', row[6])
    if not (type(reply) == 'table' and reply.err) then
      reply = redis.pcall('EXPIRE', key, ttl)
    end
  end
  if type(reply) == 'table' and reply.err then
    failed = failed + 1
  end
end
return failed
"""
def capacity_rows(controller_ids: Collection[str]) -> dict[str, list[str]]:
    """Each existing controller's hash values (CAPACITY_FIELDS order) from its row as it is now: one query."""
    with server_bound_cursor() as cursor:
        cursor.execute(_CAPACITY_SQL, [list(controller_ids)])
        return dict(cursor.fetchall())


def queue_capacity(pipe: Any, controller_id: str, values: list[str] | None) -> None:
    """Queue one controller's capacity hash on a pipeline: HSET of every field and EXPIRE, or DELETE when gone."""
    key = CAPACITY_KEY.format(controller_id=controller_id)
    if values is None:
        pipe.delete(key)  # the controller is gone: no stale capacity may outlive it
        return
    pipe.hset(key, mapping=dict(zip(CAPACITY_FIELDS, values, strict=True)))
    # Redis 6.2 has no per-field TTL (HEXPIRE): the whole hash expires.
    pipe.expire(key, CAPACITY_TTL_SECONDS)


def capacity_cache_refresh(*, controller_ids: Collection[str], client: redis.Redis) -> int:
    """Write the capacity hashes of these controllers from their rows (HSET + EXPIRE each, DEL for a controller
    that is gone) with one script call per CAPACITY_SCRIPT_BATCH. Returns how many keys Redis refused (a key of
    another type); connection errors and timeouts propagate: the caller decides whether to fail open."""
    ids = list(controller_ids)
    documents = []
    for start in range(0, len(ids), CAPACITY_SCRIPT_BATCH):
        with server_bound_cursor() as cursor:
            cursor.execute(_CAPACITY_DOCUMENT_SQL, [json.dumps(ids[start:start + CAPACITY_SCRIPT_BATCH])])
            row = cursor.fetchone()
            assert row is not None  # an aggregate without GROUP BY: always one row
            documents.append(row[0])
    return capacity_cache_write(documents=documents, client=client)


def capacity_cache_write(*, documents: Iterable[str], client: redis.Redis) -> int:
    """Write the hashes of capacity documents the database built (one script call each, so at most
    CAPACITY_SCRIPT_BATCH controllers per document). Returns how many keys Redis refused; connection errors and
    timeouts propagate."""
    script = client.register_script(_CAPACITY_SCRIPT)
    key_prefix, _, key_suffix = CAPACITY_KEY.partition("{controller_id}")
    return sum(
        int(script(args=[CAPACITY_TTL_SECONDS, key_prefix, key_suffix, document])) for document in documents
    )




def capacity_queue_for(controller_ids: Collection[str]) -> Any:
    """The outbox relay's effect for events about controllers: their rows read at once, then one controller's
    hash queued per event (audit.relay.relay_effect_register)."""
    capacities = capacity_rows(controller_ids)

    def queue(pipe: Any, controller_id: str) -> None:
        queue_capacity(pipe, controller_id, capacities.get(controller_id))

    return queue
