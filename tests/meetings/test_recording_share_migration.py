"""The share-link migration leaves no plaintext token usable: a shared recording's token becomes its SHA-256
hash with the default lifetime from the migration on; a token on an unshared row is dropped; the reverse
cannot recover a plaintext, so it unshares every recording."""

from __future__ import annotations

import hashlib
from datetime import timedelta

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.fixtures.sql import sql, sql_value

BEFORE = ("meetings", "0004_guests_waiting_room_bans")
TOKENS = {"shared": "legacy-shared-TOKEN", "unshared": "legacy-unshared-TOKEN"}


def _migrate(executor: MigrationExecutor, targets: list[tuple[str, str]]) -> MigrationExecutor:
    executor.migrate(targets)
    return MigrationExecutor(connection)


def _insert(meeting_id, name: str, *, is_public: bool, token: str | None) -> None:
    sql("INSERT INTO recordings (meeting_id, started_at, storage_path, storage_bucket, status, is_public, "
        "access_token) VALUES (%s, now(), %s, 'b', 'ready', %s, %s)", [meeting_id, name, is_public, token])


def _rows() -> dict[str, tuple]:
    return {row[0]: row[1:] for row in sql(
        "SELECT storage_path, is_public, share_token_hash, share_expires_at FROM recordings"
    )}


@pytest.mark.django_db(transaction=True)
def test_legacy_tokens_are_hashed_forwards_and_unshared_backwards(settings):
    executor = MigrationExecutor(connection)
    leaves = executor.loader.graph.leaf_nodes()
    try:
        executor = _migrate(executor, [BEFORE])
        meeting_id = sql_value("INSERT INTO meetings (display_name, meeting_code) VALUES ('L', 'legacy-rec') "
                               "RETURNING meeting_id")
        _insert(meeting_id, "shared", is_public=True, token=TOKENS["shared"])
        _insert(meeting_id, "unshared", is_public=False, token=TOKENS["unshared"])
        _insert(meeting_id, "public-without-token", is_public=True, token=None)
        _insert(meeting_id, "plain", is_public=False, token=None)

        started = sql_value("SELECT now()")
        executor = _migrate(executor, leaves)
        rows = _rows()
        digest = hashlib.sha256(TOKENS["shared"].encode()).hexdigest()
        assert rows["shared"][:2] == (True, digest)
        lifetime = timedelta(seconds=settings.RECORDING_SHARE_DEFAULT_SECONDS)
        assert started + lifetime <= rows["shared"][2] <= sql_value("SELECT now()") + lifetime
        for name in ("unshared", "public-without-token", "plain"):
            assert rows[name] == (False, None, None), name
        table = str(sql("SELECT * FROM recordings"))
        assert not any(token in table for token in TOKENS.values())

        executor = _migrate(executor, [BEFORE])
        assert sql("SELECT storage_path, is_public, access_token FROM recordings WHERE is_public "
                   "OR access_token IS NOT NULL") == []

        executor = _migrate(executor, leaves)
        assert set(_rows().values()) == {(False, None, None)}
    finally:
        MigrationExecutor(connection).migrate(leaves)
        sql("DELETE FROM meetings WHERE meeting_code = 'legacy-rec'")
