"""Production settings (DEBUG off) are safe by default: HTTPS redirect, HSTS, secure cookies, short admin sessions,
a required SIGNING_KEY_ENCRYPTION_KEY, and `manage.py check --deploy` without a warning. Development (DEBUG on)
is never sent to https. Each case imports the settings afresh in a subprocess with its own environment."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings as django_settings

from tools.devenv import ROOT

# What an operator's environment might carry into the test run; each case states its own.
_CLEARED_PREFIXES = (
    "DEBUG", "SECRET_KEY", "SIGNING_KEY_ENCRYPTION_KEY", "ALLOWED_HOSTS", "SECURE_", "SESSION_", "CSRF_",
    "TRUSTED_PROXIES", "TRUST_X_FORWARDED_PROTO",
)
_SHOWN = (
    "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS", "SECURE_HSTS_PRELOAD",
    "SESSION_COOKIE_AGE", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "SECURE_PROXY_SSL_HEADER",
)
_SHOW = (
    "import json, django; django.setup(); from django.conf import settings; "
    f"print(json.dumps({{name: getattr(settings, name) for name in {_SHOWN!r}}}))"
)


def _production(**extra: str) -> dict[str, str]:
    return {
        "DEBUG": "0", "SECRET_KEY": secrets.token_urlsafe(50), "ALLOWED_HOSTS": "gc.example.test",
        "SIGNING_KEY_ENCRYPTION_KEY": secrets.token_urlsafe(50), **extra,
    }


def _run(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    inherited = {name: value for name, value in os.environ.items() if not name.startswith(_CLEARED_PREFIXES)}
    return subprocess.run(
        [sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False,
        env={**inherited, "DJANGO_SETTINGS_MODULE": "darktower.settings", **env},
    )


def _settings(env: dict[str, str]) -> dict[str, object]:
    completed = _run(["-c", _SHOW], env)
    assert completed.returncode == 0, completed.stderr[-2000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def test_check_deploy_is_clean_under_the_production_defaults():
    completed = _run(["manage.py", "check", "--deploy", "--fail-level", "WARNING"], _production())

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "System check identified no issues" in completed.stdout
    assert "WARNING" not in completed.stderr + completed.stdout


def test_production_defaults_redirect_to_https_send_hsts_and_keep_sessions_short():
    assert _settings(_production()) == {
        "SECURE_SSL_REDIRECT": True, "SECURE_HSTS_SECONDS": 31_536_000, "SECURE_HSTS_INCLUDE_SUBDOMAINS": True,
        "SECURE_HSTS_PRELOAD": True, "SESSION_COOKIE_AGE": 8 * 3600, "SESSION_COOKIE_SECURE": True,
        "CSRF_COOKIE_SECURE": True, "SECURE_PROXY_SSL_HEADER": None,
    }


def test_development_is_never_sent_to_https():
    shown = _settings({"DEBUG": "1"})

    assert shown["SECURE_SSL_REDIRECT"] is False
    assert shown["SECURE_HSTS_SECONDS"] == 0
    assert shown["SESSION_COOKIE_SECURE"] is False


def test_each_default_can_be_set_from_the_environment():
    shown = _settings(_production(
        SECURE_SSL_REDIRECT="0", SECURE_HSTS_SECONDS="600", SECURE_HSTS_INCLUDE_SUBDOMAINS="0",
        SECURE_HSTS_PRELOAD="0", SESSION_COOKIE_AGE="900",
    ))

    assert (shown["SECURE_SSL_REDIRECT"], shown["SECURE_HSTS_SECONDS"]) == (False, 600)
    assert (shown["SECURE_HSTS_INCLUDE_SUBDOMAINS"], shown["SECURE_HSTS_PRELOAD"]) == (False, False)
    assert shown["SESSION_COOKIE_AGE"] == 900


def test_x_forwarded_proto_is_read_only_behind_a_trusted_proxy():
    assert _settings(_production(TRUSTED_PROXIES="10.0.0.0/8"))["SECURE_PROXY_SSL_HEADER"] == [
        "HTTP_X_FORWARDED_PROTO", "https",
    ]
    assert _settings(_production(TRUSTED_PROXIES="10.0.0.0/8", TRUST_X_FORWARDED_PROTO="0"))[
        "SECURE_PROXY_SSL_HEADER"
    ] is None

    refused = _run(["-c", _SHOW], _production(TRUST_X_FORWARDED_PROTO="1"))
    assert refused.returncode != 0
    assert "ImproperlyConfigured" in refused.stderr and "TRUSTED_PROXIES" in refused.stderr


@pytest.mark.parametrize(("name", "value"), [
    ("TRUSTED_PROXIES", "10.0.0.0/8,not-a-network"),
    ("SESSION_COOKIE_AGE", "0"),
    ("SECURE_HSTS_SECONDS", "-1"),
])
def test_bad_values_are_refused_at_start(name, value):
    completed = _run(["-c", _SHOW], _production(**{name: value}))

    assert completed.returncode != 0
    assert "ImproperlyConfigured" in completed.stderr and name in completed.stderr


def test_the_signing_key_encryption_key_is_required_when_debug_is_off():
    env = _production()
    del env["SIGNING_KEY_ENCRYPTION_KEY"]

    completed = _run(["-c", _SHOW], env)

    assert completed.returncode != 0
    assert "ImproperlyConfigured" in completed.stderr and "SIGNING_KEY_ENCRYPTION_KEY" in completed.stderr
    # The secret itself never appears in the message.
    assert env["SECRET_KEY"] not in completed.stderr


def test_the_signing_key_encryption_key_is_read_from_a_file_too(tmp_path):
    key_file = tmp_path / "key"
    key_file.write_text(secrets.token_urlsafe(50))
    env = _production()
    del env["SIGNING_KEY_ENCRYPTION_KEY"]

    assert _run(["-c", _SHOW], {**env, "SIGNING_KEY_ENCRYPTION_KEY_FILE": str(key_file)}).returncode == 0


@pytest.mark.django_db
def test_an_admin_session_lasts_the_configured_age(client):
    from tests.factories import make_user

    staff = make_user(is_staff=True, password="correct-horse-battery")

    response = client.post("/admin/login/", {"username": staff.email, "password": "correct-horse-battery"})

    assert response.status_code == 302
    assert django_settings.SESSION_COOKIE_AGE == 8 * 3600
    assert response.cookies[django_settings.SESSION_COOKIE_NAME]["max-age"] == 8 * 3600
    assert client.session.get_expiry_age() == 8 * 3600


@pytest.mark.django_db
def test_production_redirects_plain_http_but_not_probes_and_sends_hsts(client, settings):
    settings.SECURE_SSL_REDIRECT = True
    settings.SECURE_HSTS_SECONDS = 31_536_000
    settings.SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    settings.SECURE_HSTS_PRELOAD = True

    redirected = client.get("/admin/login/")
    assert redirected.status_code == 301 and redirected["Location"] == "https://testserver/admin/login/"
    assert client.get("/health").status_code == 200
    assert client.get("/metrics").status_code == 200  # loopback scrape, plain HTTP
    secure = client.get("/admin/login/", secure=True)
    assert secure.status_code == 200
    assert secure["Strict-Transport-Security"] == "max-age=31536000; includeSubDomains; preload"
