"""Liveness and readiness for load balancers and orchestrators.

GET /health: the process answers. GET /ready: it can serve, i.e. PostgreSQL and Redis answer and no
migration is pending; otherwise 503 with the reasons.
"""

from __future__ import annotations

import logging

import redis
from django.db import DatabaseError, connection
from django.db.migrations.executor import MigrationExecutor
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import serializers, status
from rest_framework.request import Request
from rest_framework.response import Response

from darktower.api.views import ApiView
from darktower.redis import redis_client

logger = logging.getLogger(__name__)

# Set once all migrations were seen applied: a new migration only arrives with a new deploy (a new process),
# so re-reading the migration files on every probe would be wasted work.
_migrations_seen_applied = False


def pending_migrations() -> list[str]:
    global _migrations_seen_applied
    if _migrations_seen_applied:
        return []
    executor = MigrationExecutor(connection)
    plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
    pending = [f"{migration.app_label}.{migration.name}" for migration, _backwards in plan]
    _migrations_seen_applied = not pending
    return pending


def readiness_problems() -> list[str]:
    problems = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        logger.warning("readiness: database unreachable (%s)", type(exc).__name__)
        problems.append("database unreachable")
    else:
        pending = pending_migrations()
        if pending:
            problems.append(f"migrations pending: {', '.join(pending[:5])}" + (" ..." if len(pending) > 5 else ""))
    try:
        redis_client().ping()
    except redis.RedisError as exc:
        logger.warning("readiness: Redis unreachable (%s)", type(exc).__name__)
        problems.append("redis unreachable")
    return problems


HealthResponse = inline_serializer(name="HealthResponse", fields={"status": serializers.CharField()})
ReadyResponse = inline_serializer(
    name="ReadyResponse",
    fields={"status": serializers.CharField(), "reasons": serializers.ListField(child=serializers.CharField())},
)


class HealthView(ApiView):
    public = True
    authentication_classes = []

    @extend_schema(operation_id="health", tags=["health"], responses={200: HealthResponse})
    def get(self, request: Request) -> Response:
        return Response({"status": "ok"})


class ReadyView(ApiView):
    public = True
    authentication_classes = []

    @extend_schema(operation_id="ready", tags=["health"], responses={200: ReadyResponse, 503: ReadyResponse})
    def get(self, request: Request) -> Response:
        problems = readiness_problems()
        if problems:
            return Response({"status": "unavailable", "reasons": problems}, status=status.HTTP_503_SERVICE_UNAVAILABLE)
        return Response({"status": "ready", "reasons": []})
