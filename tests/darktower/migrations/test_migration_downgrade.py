"""A database in real use holds pending and draining rows; rolling controllers back must still work."""

from __future__ import annotations

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor

from tests.fixtures.sql import sql


@pytest.mark.django_db(transaction=True)
def test_controllers_roll_back_to_0001_with_pending_and_draining_rows_and_forward_again():
    leaves = MigrationExecutor(connection).loader.graph.leaf_nodes()
    for table, key, extra in (
        ("meeting_controllers", "controller_id", ", max_meetings, max_participants"),
        ("media_handlers", "handler_id", ", max_streams, max_bitrate_mbps"),
    ):
        for health in ("pending", "draining", "healthy"):
            sql(
                f"INSERT INTO {table} ({key}, region, endpoint, grpc_endpoint, health_status{extra}) "
                f"VALUES (%s, 'us-east-1', 'grpc://x:1', 'grpc://x:1', %s, 1, 1)",
                [f"{table}-{health}", health],
            )
    try:
        MigrationExecutor(connection).migrate([("controllers", "0001_initial")])
        for table, key in (("meeting_controllers", "controller_id"), ("media_handlers", "handler_id")):
            states = dict(sql(f"SELECT {key}, health_status FROM {table}"))
            assert states == {
                f"{table}-pending": "unhealthy",
                f"{table}-draining": "unhealthy",
                f"{table}-healthy": "healthy",
            }
    finally:
        MigrationExecutor(connection).migrate(leaves)
    assert sql("SELECT count(*) FROM meeting_controllers")[0][0] == 3
