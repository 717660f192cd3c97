"""Rate limits in Redis (ratelimit:{endpoint}:{identifier}:{window}): 429 with Retry-After over the limit;
with Redis unreachable the API fails open, and login falls back to counting failed logins in the audit trail.
Every refusal counts in darktower_rate_limit_rejections_total by endpoint."""

from __future__ import annotations

import ipaddress
import logging
import random
import uuid

import pytest
from django.conf import settings as django_settings

from accounts.services.users import email_hash
from darktower.errors import Throttled
from darktower.metrics import REGISTRY
from darktower.redis import redis_client
from meetings.models import Meeting
from tests.factories import make_controller, make_meeting, make_user
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

MEETINGS = "/api/v1/meetings"
LOGIN = "/api/v1/auth/login"
DOCUMENTATION_PREFIX = 0x20010DB8 << 96  # 2001:db8::/32


def fresh_ip() -> str:
    # Counters outlive a test (same Redis db, hour-long windows, earlier runs too): every address and email
    # is random, so no test ever meets another's counter.
    return str(ipaddress.IPv6Address(DOCUMENTATION_PREFIX | random.getrandbits(96)))


def fresh_email() -> str:
    return f"{uuid.uuid4().hex}@example.test"


@pytest.fixture(autouse=True)
def long_windows(settings):
    # Fixed windows: a test that straddled a window boundary would see its counter restart. An hour makes
    # that practically impossible.
    settings.RATE_LIMIT_WINDOW_SECONDS = 3600


@pytest.fixture
def redis_down(settings, tmp_path):
    settings.REDIS_URL = f"unix://{tmp_path}/nothing-listens-here.sock"


def assert_throttled(response):
    assert_error(response, 429, "throttled")
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= django_settings.RATE_LIMIT_WINDOW_SECONDS
    return retry_after


def test_meeting_creation_is_limited_per_principal(as_user, as_key, host, other, settings):
    settings.RATE_LIMIT_MEETING_CREATE_PER_PRINCIPAL = 3
    client = as_user(host)
    for _ in range(3):
        assert client.post(MEETINGS, {"display_name": "x"}, format="json").status_code == 201
    assert_throttled(client.post(MEETINGS, {"display_name": "x"}, format="json"))
    assert Meeting.objects.count() == 3
    # Another user, and the same user's API key (its own principal), have their own budgets.
    assert as_user(other).post(MEETINGS, {"display_name": "x"}, format="json").status_code == 201
    assert as_key(host, ["meetings:create"]).post(MEETINGS, {"display_name": "x"}, format="json").status_code == 201
    # Reads are not limited by it.
    assert client.get(MEETINGS).status_code == 200
    keys = [key.decode() for key in redis_client().scan_iter(f"ratelimit:api:meetings:create:user:{host.pk}:*")]
    assert len(keys) == 1
    assert redis_client().ttl(keys[0]) <= django_settings.RATE_LIMIT_WINDOW_SECONDS


def test_joins_are_limited_per_principal_and_per_address(as_user, host, other, settings):
    make_controller(region="us-east-1")
    meeting = make_meeting(host=host)
    url = f"{MEETINGS}/{meeting.pk}/join"
    settings.RATE_LIMIT_JOIN_PER_PRINCIPAL = 2
    address = fresh_ip()
    client = as_user(host)
    # A join, then a reload (the same participant back, 200): both count.
    assert [client.post(url, format="json", REMOTE_ADDR=address).status_code for _ in range(2)] == [201, 200]
    assert_throttled(client.post(url, format="json", REMOTE_ADDR=address))

    settings.RATE_LIMIT_JOIN_PER_PRINCIPAL = 100
    settings.RATE_LIMIT_JOIN_PER_IP = 4  # this address has used 3 already
    assert as_user(other).post(url, format="json", REMOTE_ADDR=address).status_code == 201
    assert_throttled(as_user(other).post(url, format="json", REMOTE_ADDR=address))
    assert as_user(other).post(url, format="json", REMOTE_ADDR=fresh_ip()).status_code == 200


def test_guest_tokens_are_limited_per_address(api, host, settings):
    make_controller(region="us-east-1")
    meeting = make_meeting(host=host, allow_guests=True)
    settings.RATE_LIMIT_JOIN_PER_IP = 2
    address = fresh_ip()
    url = f"{MEETINGS}/{meeting.pk}/guest-token"
    for _ in range(2):
        assert api.post(url, {"display_name": "G"}, format="json", REMOTE_ADDR=address).status_code == 201
    assert_throttled(api.post(url, {"display_name": "G"}, format="json", REMOTE_ADDR=address))


def test_login_is_limited_per_account_even_with_the_right_password(api, settings):
    settings.RATE_LIMIT_LOGIN_PER_EMAIL = 3
    user = make_user(email=fresh_email())
    for _ in range(3):
        assert_error(api.post(LOGIN, {"email": user.email, "password": "wrong"}, format="json",
                              REMOTE_ADDR=fresh_ip()), 401, "unauthenticated")
    response = api.post(LOGIN, {"email": user.email.upper(), "password": "correct-horse-battery"}, format="json",
                        REMOTE_ADDR=fresh_ip())
    assert_throttled(response)
    # The account's key names a keyed hash, never the email.
    keys = [key.decode() for key in redis_client().scan_iter("ratelimit:api:auth:login:email:*")]
    assert any(email_hash(user.email) in key for key in keys)
    assert not any(user.email in key for key in keys)


def test_login_is_limited_per_address(api, settings):
    settings.RATE_LIMIT_LOGIN_PER_IP = 2
    address = fresh_ip()
    for _ in range(2):
        api.post(LOGIN, {"email": fresh_email(), "password": "x"}, format="json", REMOTE_ADDR=address)
    assert_throttled(api.post(LOGIN, {"email": fresh_email(), "password": "x"}, format="json", REMOTE_ADDR=address))


def login_as(api, user, address, password="correct-horse-battery"):
    return api.post(LOGIN, {"email": user.email, "password": password}, format="json", REMOTE_ADDR=address)


def test_failed_logins_from_one_address_do_not_lock_the_owner_out_from_another(api, settings):
    settings.RATE_LIMIT_LOGIN_PER_EMAIL_AND_IP = 5
    settings.RATE_LIMIT_LOGIN_PER_EMAIL = 8
    settings.RATE_LIMIT_LOGIN_PER_IP = 1000
    user = make_user(email=fresh_email())
    attacker, owner = fresh_ip(), fresh_ip()
    for _ in range(5):
        assert_error(login_as(api, user, attacker, "wrong"), 401, "unauthenticated")
    # The attacker's address is refused for this account, the right password too; its refused attempts count
    # nowhere (else they would push the account over its own, higher, limit).
    for _ in range(10):
        assert_throttled(login_as(api, user, attacker, "wrong"))
    assert_throttled(login_as(api, user, attacker))
    assert login_as(api, user, owner).status_code == 200
    # Failures from the owner's address are counted for that address: 2 more reach neither limit...
    for _ in range(2):
        assert_error(login_as(api, user, owner, "wrong"), 401, "unauthenticated")
    assert login_as(api, user, owner).status_code == 200
    # ...and the account's own limit (8 failures from anywhere) still stops distributed guessing.
    for _ in range(1):
        assert_error(login_as(api, user, fresh_ip(), "wrong"), 401, "unauthenticated")
    assert_throttled(login_as(api, user, fresh_ip()))
    keys = [key.decode() for key in redis_client().scan_iter(f"ratelimit:api:auth:login:email-ip:*{attacker}*")]
    assert len(keys) == 1 and email_hash(user.email) in keys[0] and user.email not in keys[0]


def test_successful_logins_count_against_no_login_limit(api, settings):
    settings.RATE_LIMIT_LOGIN_PER_EMAIL_AND_IP = 2
    settings.RATE_LIMIT_LOGIN_PER_EMAIL = 2
    settings.RATE_LIMIT_LOGIN_PER_IP = 2
    user = make_user(email=fresh_email())
    address = fresh_ip()
    for _ in range(6):
        assert login_as(api, user, address).status_code == 200
    # Two failures are still allowed after any number of successes; the third attempt is refused.
    for _ in range(2):
        assert_error(login_as(api, user, address, "wrong"), 401, "unauthenticated")
    assert_throttled(login_as(api, user, address))


def test_redis_down_failed_logins_from_one_address_do_not_lock_the_owner_out(api, settings, redis_down):
    settings.RATE_LIMIT_LOGIN_PER_EMAIL_AND_IP = 2
    settings.RATE_LIMIT_LOGIN_PER_EMAIL = 4
    settings.RATE_LIMIT_LOGIN_PER_IP = 1000
    user = make_user(email=fresh_email())
    attacker, owner = fresh_ip(), fresh_ip()
    for _ in range(2):
        assert_error(login_as(api, user, attacker, "wrong"), 401, "unauthenticated")
    assert_throttled(login_as(api, user, attacker))
    assert login_as(api, user, owner).status_code == 200
    for _ in range(2):
        assert_error(login_as(api, user, fresh_ip(), "wrong"), 401, "unauthenticated")
    # Four failures on the account from three addresses: the account's limit.
    assert_throttled(login_as(api, user, owner))


def test_redis_down_the_api_fails_open_and_logs(as_user, host, settings, redis_down, caplog):
    settings.RATE_LIMIT_MEETING_CREATE_PER_PRINCIPAL = 1
    client = as_user(host)  # token verification also survives: the blacklist lookup fails open
    with caplog.at_level(logging.WARNING, logger="darktower.api.ratelimit"):
        for _ in range(3):
            assert client.post(MEETINGS, {"display_name": "x"}, format="json").status_code == 201
    assert Meeting.objects.count() == 3
    # One warning for the outage, not one per request.
    assert len([record for record in caplog.records if "Redis unreachable" in record.getMessage()]) == 1


def test_redis_down_joins_keep_working(as_user, host, settings, redis_down):
    make_controller(region="us-east-1")
    settings.RATE_LIMIT_JOIN_PER_PRINCIPAL = 1
    meeting = make_meeting(host=host)
    statuses = [as_user(host).post(f"{MEETINGS}/{meeting.pk}/join", format="json").status_code for _ in range(2)]
    assert statuses == [201, 200]


def test_redis_down_login_falls_back_to_counting_failed_logins(api, settings, redis_down):
    settings.RATE_LIMIT_LOGIN_PER_EMAIL = 3
    user = make_user(email=fresh_email())
    # Correct logins are never held back by the fallback: it counts failures only.
    for _ in range(5):
        ok = api.post(LOGIN, {"email": user.email, "password": "correct-horse-battery"}, format="json",
                      REMOTE_ADDR=fresh_ip())
        assert ok.status_code == 200
    for _ in range(3):
        assert_error(api.post(LOGIN, {"email": user.email, "password": "wrong"}, format="json",
                              REMOTE_ADDR=fresh_ip()), 401, "unauthenticated")
    # Three failures in the window: the account is limited, right password or not, from any address.
    assert_throttled(api.post(LOGIN, {"email": user.email, "password": "correct-horse-battery"}, format="json",
                              REMOTE_ADDR=fresh_ip()))
    # Other accounts are not.
    other = make_user(email=fresh_email())
    assert api.post(LOGIN, {"email": other.email, "password": "correct-horse-battery"}, format="json",
                    REMOTE_ADDR=fresh_ip()).status_code == 200


def test_redis_down_login_fallback_limits_an_address(api, settings, redis_down):
    settings.RATE_LIMIT_LOGIN_PER_IP = 3
    address = fresh_ip()
    for _ in range(3):
        api.post(LOGIN, {"email": fresh_email(), "password": "x"}, format="json", REMOTE_ADDR=address)
    assert_throttled(api.post(LOGIN, {"email": fresh_email(), "password": "x"}, format="json", REMOTE_ADDR=address))


def rejections(endpoint):
    return REGISTRY.get_sample_value("darktower_rate_limit_rejections_total", {"endpoint": endpoint}) or 0.0


def test_rejections_are_counted_by_endpoint(as_user, host, api, settings):
    settings.RATE_LIMIT_MEETING_CREATE_PER_PRINCIPAL = 1
    settings.RATE_LIMIT_LOGIN_PER_IP = 1
    settings.RATE_LIMIT_LOGIN_PER_EMAIL = 1
    creates, logins = rejections("api:meetings:create"), rejections("api:auth:login")
    client = as_user(host)
    assert client.post(MEETINGS, {"display_name": "x"}, format="json").status_code == 201
    assert rejections("api:meetings:create") == creates  # served requests are not counted
    for _ in range(2):
        assert_throttled(client.post(MEETINGS, {"display_name": "x"}, format="json"))
    assert rejections("api:meetings:create") == creates + 2
    # Over both login limits at once (address and account) is still one rejected request.
    address, email = fresh_ip(), fresh_email()
    api.post(LOGIN, {"email": email, "password": "x"}, format="json", REMOTE_ADDR=address)
    assert_throttled(api.post(LOGIN, {"email": email, "password": "x"}, format="json", REMOTE_ADDR=address))
    assert rejections("api:auth:login") == logins + 1


def test_rejections_by_the_login_fallback_are_counted(api, settings, redis_down):
    settings.RATE_LIMIT_LOGIN_PER_EMAIL = 1
    user = make_user(email=fresh_email())
    before = rejections("api:auth:login")
    assert_error(api.post(LOGIN, {"email": user.email, "password": "wrong"}, format="json", REMOTE_ADDR=fresh_ip()),
                 401, "unauthenticated")
    assert_throttled(api.post(LOGIN, {"email": user.email, "password": "wrong"}, format="json", REMOTE_ADDR=fresh_ip()))
    assert rejections("api:auth:login") == before + 1


def test_counters_count_and_expire_after_redis_forgot_its_scripts(settings):
    # A restarted (or flushed) Redis has no scripts: a hit still counts every limit and sets each counter's TTL.
    from darktower.api.ratelimit import RateLimit, ratelimit_hit

    identifier = f"ip:{fresh_ip()}"
    limits = [RateLimit("test:hit", identifier, 2, 3600), RateLimit("test:hit", f"{identifier}-b", 5, 60)]
    ratelimit_hit(limits)
    redis_client().script_flush()
    ratelimit_hit(limits)
    counters = [key.decode() for key in redis_client().scan_iter(f"ratelimit:test:hit:{identifier}*")]
    assert sorted(int(redis_client().get(key)) for key in counters) == [2, 2]
    ttls = sorted(redis_client().ttl(key) for key in counters)
    assert 0 < ttls[0] <= 60 and 60 < ttls[1] <= 3600
    with pytest.raises(Throttled):
        ratelimit_hit(limits)
