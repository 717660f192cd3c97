"""The Celery broker and result backend use the Redis database REDIS_URL names, unix socket included."""

from __future__ import annotations

import uuid

import pytest
import redis
from django.conf import settings

from darktower.celery import app
from darktower.settings import _celery_broker_url


@pytest.mark.parametrize(
    ("redis_url", "broker_url"),
    [
        ("unix:///run/redis.sock?db=6", "redis+socket:///run/redis.sock?virtual_host=6"),
        ("unix:///run/redis.sock", "redis+socket:///run/redis.sock"),
        ("unix:///run/redis.sock?db=2&health_check_interval=5",
         "redis+socket:///run/redis.sock?virtual_host=2&health_check_interval=5"),
        ("redis://cache.internal:6379/3", "redis://cache.internal:6379/3"),
    ],
)
def test_redis_url_becomes_a_kombu_url(redis_url, broker_url):
    assert _celery_broker_url(redis_url) == broker_url


def test_the_broker_writes_to_the_database_redis_url_names():
    key = f"test:broker-db:{uuid.uuid4()}"
    plain = redis.Redis.from_url(settings.REDIS_URL)
    try:
        with app.connection_for_write() as connection:
            connection.default_channel.client.set(key, "1", ex=60)
        assert plain.get(key) == b"1"
        assert app.backend.client.get(key) == b"1"
    finally:
        plain.delete(key)
        plain.close()
