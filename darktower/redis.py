"""The process's Redis connection for ephemeral state (token blacklist, rate limits, capacity cache).

One client per URL and timeout, so a changed settings.REDIS_URL (tests, a reconfigured process) gets its
own client instead of a stale one. Short socket timeouts: Redis is never worth stalling a request for."""

from __future__ import annotations

from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=8)
def _client(url: str, timeout: float) -> redis.Redis:
    return redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)


def redis_client() -> redis.Redis:
    return _client(settings.REDIS_URL, settings.REDIS_SOCKET_TIMEOUT_SECONDS)
