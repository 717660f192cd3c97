"""Column comments: what the models declare is what the database holds, and the columns whose meaning the name
does not carry (states, units, denormalised copies, secrets, personal data) all have one."""

from __future__ import annotations

import pytest
from django.apps import apps
from django.db import connection

pytestmark = pytest.mark.django_db

APPS = ("accounts", "meetings", "controllers", "audit")

# Not obvious from the name: each must carry a comment.
REQUIRED = {
    "meeting_controllers": ["health_status", "last_heartbeat_at", "grpc_endpoint", "webtransport_endpoint",
                            "max_meetings", "current_meetings", "assigned_since_heartbeat", "drain_deadline"],
    "media_handlers": ["health_status", "grpc_endpoint", "webtransport_endpoint", "cpu_usage_percent",
                       "memory_usage_percent", "bandwidth_usage_percent", "max_bitrate_mbps", "supported_codecs"],
    "meetings": ["status", "assigned_controller_id", "assigned_region", "require_auth", "allow_guests"],
    "meeting_participants": ["leave_reason", "ip_address", "total_duration_seconds"],
    "recordings": ["status", "storage_bucket", "storage_path", "is_public", "share_token_hash", "share_expires_at"],
    "meeting_assignments": ["ended_at", "assigned_by_gc_id", "region"],
    "audit_logs": ["event_type", "actor_type", "target_type", "target_id", "result", "metadata", "created_at"],
    "outbox_events": ["aggregate_type", "processed_at", "attempts", "failed_at"],
    "idempotency_keys": ["principal", "request_hash", "state", "response_body", "expires_at"],
    "api_keys": ["key_hash", "key_prefix", "scopes"],
    "oauth_providers": ["access_token_encrypted", "refresh_token_encrypted"],
}


def _comments(table: str) -> dict[str, str | None]:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT a.attname, col_description(a.attrelid, a.attnum) FROM pg_attribute a "
            "WHERE a.attrelid = %s::regclass AND a.attnum > 0 AND NOT a.attisdropped",
            [table],
        )
        return dict(cursor.fetchall())


def test_every_declared_comment_is_in_the_database():
    mismatched = []
    for app in APPS:
        for model in apps.get_app_config(app).get_models():
            if not model._meta.managed:
                continue
            found = _comments(model._meta.db_table)
            mismatched += [
                (model._meta.db_table, field.column, field.db_comment, found.get(field.column))
                for field in model._meta.local_fields
                if field.db_comment and found.get(field.column) != field.db_comment
            ]
    assert mismatched == []


@pytest.mark.parametrize("table", sorted(REQUIRED))
def test_non_obvious_columns_are_commented(table):
    found = _comments(table)
    assert [column for column in REQUIRED[table] if not found.get(column)] == []
