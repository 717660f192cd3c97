"""The client address behind a proxy: X-Forwarded-For counts only when the peer (REMOTE_ADDR) is in TRUSTED_PROXIES,
and then the right-most address that is not a trusted proxy is the client. Rate limits, audit rows, idempotency
principals and the /metrics allow-list all use that one address."""

from __future__ import annotations

import ipaddress
import random
import uuid

import pytest

from audit.models import AuditLog, IdempotencyKey
from darktower.client_address import client_address
from tests.factories import make_controller, make_meeting, make_user
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

LOGIN = "/api/v1/auth/login"
PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))


def _documentation_ip() -> str:
    # Counters outlive a test (same Redis db): every client address is fresh.
    return str(ipaddress.IPv6Address((0x20010DB8 << 96) | random.getrandbits(96)))


@pytest.fixture
def behind_proxy(settings):
    settings.TRUSTED_PROXIES_PARSED = PROXIES


def _meta(remote_addr: str, forwarded_for: str | None = None) -> dict[str, str]:
    meta = {"REMOTE_ADDR": remote_addr}
    if forwarded_for is not None:
        meta["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return meta


def test_by_default_no_proxy_is_trusted_and_the_header_is_ignored(settings):
    assert settings.TRUSTED_PROXIES_PARSED == ()
    assert client_address(_meta("10.1.2.3", "198.51.100.7")) == "10.1.2.3"
    assert client_address(_meta("198.51.100.9", "127.0.0.1")) == "198.51.100.9"


@pytest.mark.usefixtures("behind_proxy")
@pytest.mark.parametrize(("remote_addr", "forwarded_for", "client"), [
    # One trusted proxy: the address it appended.
    ("10.0.0.2", "198.51.100.7", "198.51.100.7"),
    # What the client wrote itself is left of the address the proxy saw: ignored.
    ("10.0.0.2", "127.0.0.1, 198.51.100.7", "198.51.100.7"),
    # A chain of trusted proxies: the right-most address that is not one of them.
    ("10.0.0.2", "203.0.113.5, 198.51.100.7, 10.9.9.9, 10.4.4.4", "198.51.100.7"),
    ("fd00::1", "2001:db8::5, fd00::2", "2001:db8::5"),
    # Every hop trusted: the farthest one.
    ("10.0.0.2", "10.3.3.3, 10.4.4.4", "10.3.3.3"),
    # No header, or an empty one: the proxy itself.
    ("10.0.0.2", None, "10.0.0.2"),
    ("10.0.0.2", "", "10.0.0.2"),
    # An untrusted peer: its header is not read at all (a spoof).
    ("198.51.100.9", "10.0.0.2, 127.0.0.1", "198.51.100.9"),
    # Malformed values stop the walk at the nearest hop known good.
    ("10.0.0.2", "not-an-ip", "10.0.0.2"),
    ("10.0.0.2", "198.51.100.7, garbage, 10.4.4.4", "10.4.4.4"),
    ("10.0.0.2", ",,, ,", "10.0.0.2"),
    ("10.0.0.2", "1" * 5000, "10.0.0.2"),
    ("10.0.0.2", "198.51.100.7\x00", "10.0.0.2"),
    # Canonical form: the address is what INET columns and rate-limit keys store.
    ("10.0.0.2", " 2001:DB8:0:0::7 ", "2001:db8::7"),
])
def test_the_right_most_untrusted_address_wins(remote_addr, forwarded_for, client):
    assert client_address(_meta(remote_addr, forwarded_for)) == client


def test_a_peer_that_is_no_address_gives_none(behind_proxy):
    assert client_address(_meta("", "198.51.100.7")) is None
    assert client_address({}) is None
    assert client_address(_meta("unix:/run/gunicorn.sock", "198.51.100.7")) is None


def _login(api, *, peer: str, forwarded_for: str | None = None, email: str | None = None):
    """A failed login (a fresh account unless `email` is given) from `peer`."""
    email = email or f"{uuid.uuid4().hex}@example.test"
    extra = {"REMOTE_ADDR": peer}
    if forwarded_for is not None:
        extra["HTTP_X_FORWARDED_FOR"] = forwarded_for
    return api.post(LOGIN, {"email": email, "password": "wrong"}, format="json", **extra)


def test_login_limits_count_the_client_behind_a_trusted_proxy(api, settings, behind_proxy):
    settings.RATE_LIMIT_LOGIN_PER_IP = 2
    proxy, alice, bob = "10.0.0.2", _documentation_ip(), _documentation_ip()
    for _ in range(2):
        assert _login(api, peer=proxy, forwarded_for=alice).status_code == 401
    assert_error(_login(api, peer=proxy, forwarded_for=alice), 429, "throttled")
    # Another client behind the same proxy has its own counter.
    assert _login(api, peer=proxy, forwarded_for=bob).status_code == 401
    # A client cannot escape its counter by inventing a hop: the proxy appends the address it saw.
    spoofed = f"{_documentation_ip()}, {alice}"
    assert_error(_login(api, peer=proxy, forwarded_for=spoofed), 429, "throttled")


def test_an_untrusted_peer_cannot_pick_its_bucket_with_the_header(api, settings):
    settings.RATE_LIMIT_LOGIN_PER_IP = 2
    attacker = _documentation_ip()
    for _ in range(2):
        response = _login(api, peer=attacker, forwarded_for=_documentation_ip())
        assert response.status_code == 401
    response = _login(api, peer=attacker, forwarded_for=_documentation_ip())
    assert_error(response, 429, "throttled")


def test_audit_rows_record_the_client_behind_a_trusted_proxy_and_the_peer_otherwise(api, behind_proxy):
    user = make_user(password="correct-horse-battery")
    client = _documentation_ip()
    ok = api.post(LOGIN, {"email": user.email, "password": "correct-horse-battery"}, format="json",
                  REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_FOR=f"127.0.0.1, {client}")
    assert ok.status_code == 200
    spoofer = _documentation_ip()
    assert _login(api, email=user.email, peer=spoofer, forwarded_for=client).status_code == 401

    rows = AuditLog.objects.filter(actor_user_id=user.pk).order_by("id").values_list("result", "ip_address")
    assert list(rows) == [("success", client), ("failure", spoofer)]


def test_guest_idempotency_principals_name_the_client_behind_a_trusted_proxy(api, behind_proxy):
    make_controller(region="us-east-1")
    meeting = make_meeting(host=make_user(), allow_guests=True)
    url = f"/api/v1/meetings/{meeting.pk}/guest-token"
    client = _documentation_ip()

    response = api.post(url, {"display_name": "Ann"}, format="json", REMOTE_ADDR="10.0.0.2",
                        HTTP_X_FORWARDED_FOR=client, HTTP_IDEMPOTENCY_KEY="k-proxy")

    assert response.status_code == 201
    assert IdempotencyKey.objects.get(key="k-proxy").principal.startswith(f"guest:{client}:")


def test_metrics_allow_list_judges_the_client_not_a_trusted_proxy(client, settings):
    # A proxy on the same host (loopback, which may scrape): a public client behind it must not.
    settings.TRUSTED_PROXIES_PARSED = (ipaddress.ip_network("127.0.0.1/32"),)
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 404
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1").status_code == 200
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="::1").status_code == 200
    # An untrusted peer claiming loopback: 404.
    assert client.get("/metrics", REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_FOR="127.0.0.1").status_code == 404


def test_metrics_through_an_untrusted_local_proxy_stays_as_before(client):
    assert client.get("/metrics", REMOTE_ADDR="127.0.0.1", HTTP_X_FORWARDED_FOR="198.51.100.7").status_code == 200


@pytest.mark.parametrize("forwarded_for", ["", "garbage", "1.2.3.4.5", "::::", "\x00", "a" * 10000, "[::1]:80"])
def test_malformed_headers_never_make_a_500(api, behind_proxy, forwarded_for):
    response = _login(api, peer="10.0.0.2", forwarded_for=forwarded_for)
    assert response.status_code == 401


def test_x_forwarded_proto_counts_only_from_a_trusted_proxy(client, settings, behind_proxy):
    settings.SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
    settings.SECURE_SSL_REDIRECT = True

    # Through the proxy, which saw HTTPS: served.
    assert client.get("/admin/login/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_PROTO="https").status_code == 200
    # Through the proxy over plain HTTP: redirected.
    assert client.get("/admin/login/", REMOTE_ADDR="10.0.0.2", HTTP_X_FORWARDED_PROTO="http").status_code == 301
    # Straight to the process, claiming HTTPS: the claim is dropped and the request redirected.
    response = client.get("/admin/login/", REMOTE_ADDR="198.51.100.9", HTTP_X_FORWARDED_PROTO="https")
    assert response.status_code == 301 and response["Location"].startswith("https://")
