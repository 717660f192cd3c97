"""GET /ready with PostgreSQL unreachable: 503 naming the database. This process's connection is pointed at a
TCP port where nothing listens (the shared test server is never touched), then restored."""

from __future__ import annotations

import socket

import pytest
from django.db import connection


@pytest.fixture
def database_unreachable(django_db_blocker):
    # A bound socket that never listens: connecting to its port is refused at once, and no other process can
    # take the port while the test runs.
    saved = {name: connection.settings_dict[name] for name in ("HOST", "PORT")}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed, django_db_blocker.unblock():
        closed.bind(("127.0.0.1", 0))
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed.getsockname()[1]))
        try:
            yield
        finally:
            connection.close()
            connection.settings_dict.update(saved)


def test_not_ready_without_the_database(api, database_unreachable):
    response = api.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reasons": ["database unreachable"]}
    # Liveness does not depend on it.
    assert api.get("/health").status_code == 200
