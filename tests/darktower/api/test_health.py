"""GET /health (the process answers) and GET /ready (database, Redis, migrations)."""

from __future__ import annotations

import pytest
from django.db import connection

from darktower.api import health

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def forget_migrations_check(monkeypatch):
    monkeypatch.setattr(health, "_migrations_seen_applied", False)


def test_health_needs_nothing(api):
    response = api.get("/health")
    assert response.status_code == 200 and response.json() == {"status": "ok"}


def test_ready_when_everything_answers(api):
    response = api.get("/ready")
    assert response.status_code == 200, response.content
    assert response.json() == {"status": "ready", "reasons": []}


def test_not_ready_without_redis(api, settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/closed.sock"
    response = api.get("/ready")
    assert response.status_code == 503
    assert response.json() == {"status": "unavailable", "reasons": ["redis unreachable"]}


def test_not_ready_with_a_pending_migration(api):
    with connection.cursor() as cursor:
        # The whole app: with only its first migration gone, an applied later one would hide it from the plan.
        cursor.execute("DELETE FROM django_migrations WHERE app = 'meetings'")
    response = api.get("/ready")
    assert response.status_code == 503
    [reason] = response.json()["reasons"]
    assert reason.startswith("migrations pending: meetings.0001")


def test_health_ignores_credentials(api):
    api.credentials(HTTP_AUTHORIZATION="Bearer garbage")
    assert api.get("/health").status_code == 200
    assert api.get("/ready").status_code == 200
