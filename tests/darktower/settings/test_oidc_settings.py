"""Identity providers and the provider-token keys come from the environment, secrets also from files; a
provider configured by halves, or without its token keys in production, refuses to start. Each case imports the
settings afresh in a subprocess (tests/darktower/settings/test_production_settings.py)."""

from __future__ import annotations

import json
import secrets

from tests.darktower.settings.test_production_settings import _production, _run

_SHOW = (
    "import json, django; django.setup(); from django.conf import settings; "
    "print(json.dumps({'providers': settings.OIDC_PROVIDERS, 'keys': settings.OIDC_TOKEN_ENCRYPTION_KEYS}))"
)


def _provider(**extra: str) -> dict[str, str]:
    return {
        "OIDC_PROVIDERS": "corp-sso", "OIDC_CORP_SSO_ISSUER": "https://sso.example.test/realms/corp/",
        "OIDC_CORP_SSO_CLIENT_ID": "darktower", "OIDC_CORP_SSO_DISPLAY_NAME": "Corp SSO", **extra,
    }


def test_a_provider_and_rotated_token_keys_are_read_with_secrets_from_files(tmp_path):
    secret_file, keys_file = tmp_path / "client-secret", tmp_path / "token-keys"
    secret_file.write_text("the-client-secret\n")
    keys_file.write_text("new-key, old-key\n")

    completed = _run(["-c", _SHOW], _production(**_provider(
        OIDC_CORP_SSO_CLIENT_SECRET_FILE=str(secret_file), OIDC_TOKEN_ENCRYPTION_KEYS_FILE=str(keys_file),
    )))

    assert completed.returncode == 0, completed.stderr[-2000:]
    shown = json.loads(completed.stdout.strip().splitlines()[-1])
    assert shown == {
        "providers": {"corp-sso": {
            "issuer": "https://sso.example.test/realms/corp", "client_id": "darktower",
            "client_secret": "the-client-secret", "scopes": "openid email profile", "display_name": "Corp SSO",
        }},
        "keys": ["new-key", "old-key"],
    }


def test_a_provider_without_its_client_secret_refuses_to_start():
    completed = _run(["-c", _SHOW], _production(**_provider(OIDC_TOKEN_ENCRYPTION_KEYS="k")))

    assert completed.returncode != 0
    assert "ImproperlyConfigured" in completed.stderr and "OIDC_CORP_SSO_CLIENT_SECRET" in completed.stderr


def test_token_keys_are_required_in_production_once_a_provider_is_configured():
    secret = secrets.token_urlsafe(20)

    completed = _run(["-c", _SHOW], _production(**_provider(OIDC_CORP_SSO_CLIENT_SECRET=secret)))

    assert completed.returncode != 0
    assert "OIDC_TOKEN_ENCRYPTION_KEYS" in completed.stderr
    assert secret not in completed.stderr


def test_scopes_without_openid_and_bad_names_are_refused():
    bad_scopes = _run(["-c", _SHOW], _production(**_provider(
        OIDC_CORP_SSO_CLIENT_SECRET="s", OIDC_TOKEN_ENCRYPTION_KEYS="k", OIDC_CORP_SSO_SCOPES="email profile",
    )))
    bad_name = _run(["-c", _SHOW], _production(OIDC_PROVIDERS="Corp SSO"))

    assert bad_scopes.returncode != 0 and "OIDC_CORP_SSO_SCOPES must include openid" in bad_scopes.stderr
    assert bad_name.returncode != 0 and "OIDC_PROVIDERS" in bad_name.stderr
