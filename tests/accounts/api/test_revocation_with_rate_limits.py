"""A bearer request whose token's revocation lookup is not cached asks Redis once, for the lookup and its rate
limits together; a revoked token is still refused (401) and counted against no limit."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from accounts.blacklist import blacklist_cache_clear
from accounts.tokens import token_revoke, token_verify
from darktower.redis import redis_client
from tests.factories import make_controller, make_meeting, user_token
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
_HANDSHAKE = frozenset({"HELLO", "CLIENT", "AUTH", "SELECT"})


@contextmanager
def redis_commands() -> Iterator[list[str]]:
    """The commands clients send Redis while the block runs, read from Redis's MONITOR: neither those a script runs
    inside Redis nor a new connection's handshake."""
    client = redis_client()
    sent: list[str] = []
    with client.monitor() as monitor:
        yield sent
        marker = f"end-{uuid.uuid4()}"
        client.echo(marker)
        for command in monitor.listen():
            if marker in command["command"]:
                break
            name = command["command"].split()[0].upper()
            if command.get("client_type") != "lua" and name not in _HANDSHAKE:
                sent.append(name)


def join(client, meeting):
    return client.post(f"/api/v1/meetings/{meeting.pk}/join", {"region": REGION}, format="json")


def test_a_join_asks_redis_once_for_its_token_and_its_limits(as_user, host):
    make_controller(region=REGION)
    meeting = make_meeting(host=host)
    client = as_user(host)
    assert join(client, meeting).status_code == 201
    blacklist_cache_clear()  # the revocation lookup is no longer cached
    with redis_commands() as sent:
        response = join(client, meeting)
    assert response.status_code == 200, response.content
    assert sent == ["EVALSHA"], sent


def test_a_request_without_limits_asks_redis_once_for_its_token(as_user, host):
    client = as_user(host)
    assert client.get("/api/v1/me").status_code == 200
    blacklist_cache_clear()
    with redis_commands() as sent:
        assert client.get("/api/v1/me").status_code == 200
    assert len(sent) == 1, sent


def _counters() -> list[bytes]:
    return sorted(redis_client().scan_iter(match="ratelimit:api:meetings:join:*"))


@pytest.mark.parametrize("cached", [True, False], ids=["lookup cached", "lookup not cached"])
def test_a_revoked_token_is_refused_and_counted_nowhere(api, host, cached):
    make_controller(region=REGION)
    meeting = make_meeting(host=host)
    token = user_token(host)
    claims = token_verify(token, audience="darktower-api")
    token_revoke(claims)
    if not cached:
        blacklist_cache_clear()
    before = {key: redis_client().get(key) for key in _counters()}
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    error = assert_error(join(api, meeting), 401, "unauthenticated")
    assert error["message"] == "token revoked"
    assert {key: redis_client().get(key) for key in _counters()} == before
    # And still refused on the next request, from the cache or from Redis.
    assert_error(join(api, meeting), 401, "unauthenticated")


@pytest.mark.parametrize("path", ["/api/v1/me", "/api/v1/controllers"], ids=["no limits", "missing scope"])
def test_a_revoked_token_is_401_whatever_the_endpoint(api, host, path):
    token = user_token(host)
    token_revoke(token_verify(token, audience="darktower-api"))
    blacklist_cache_clear()
    api.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    error = assert_error(api.get(path), 401, "unauthenticated")
    assert error["message"] == "token revoked"


def test_during_a_redis_outage_a_join_is_served(as_user, host, settings, tmp_path):
    make_controller(region=REGION)
    meeting = make_meeting(host=host)
    client = as_user(host)
    blacklist_cache_clear()
    settings.REDIS_URL = f"unix://{tmp_path}/closed.sock"
    assert join(client, meeting).status_code == 201
