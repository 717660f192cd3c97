"""The README's Operations section names only commands and settings that exist, and what it says about the first
admin and a lost signing-key encryption key holds."""

from __future__ import annotations

import re

import pytest
from cryptography.fernet import InvalidToken
from django.contrib.auth import authenticate
from django.core.management import call_command, get_commands

from accounts import signing
from accounts.models import User
from accounts.tokens import token_issue, token_verify
from tools.devenv import ROOT

README = (ROOT / "README.md").read_text()


def section(title: str) -> str:
    start = README.index(f"\n## {title}\n")
    return README[start: README.index("\n## ", start + 1)]


OPERATIONS = section("Operations")


def test_every_manage_py_command_the_readme_names_exists():
    named = set(re.findall(r"manage\.py ([a-z_]+)", README))

    assert {"createsuperuser", "rotate_signing_key", "revoke_signing_key", "migrate"} <= named
    assert named - set(get_commands()) == set()


def test_every_setting_the_operations_section_names_is_read_by_the_settings():
    settings_source = (ROOT / "darktower/settings.py").read_text()
    read = set(re.findall(r'env_(?:str|bool|int|float|list|secret)\(\s*"([A-Z0-9_]+)"', settings_source))
    named = set(re.findall(r"`([A-Z][A-Z0-9]*_[A-Z0-9_]+)`", OPERATIONS))
    prefixes = {name[:-1] for name in re.findall(r"`([A-Z][A-Z0-9_]*_)\*`", OPERATIONS)}

    assert {"SIGNING_KEY_ENCRYPTION_KEY", "TRUSTED_PROXIES", "GRPC_TLS_CLIENT_CA_FILE"} <= named
    django_createsuperuser = {"DJANGO_SUPERUSER_EMAIL", "DJANGO_SUPERUSER_DISPLAY_NAME", "DJANGO_SUPERUSER_PASSWORD"}
    assert named - read - django_createsuperuser == set()
    assert all(any(name.startswith(prefix) for name in read) for prefix in prefixes)


def test_the_operations_section_links_to_sections_that_exist():
    linked = {*re.findall(r"in \*([A-Z][^*]+)\*", OPERATIONS), *re.findall(r"see \*([^*]+)\*", OPERATIONS)}

    assert "Database connections" in linked
    assert all(f"## {title}\n" in README or f"### {title}\n" in README for title in linked), linked


@pytest.mark.django_db
def test_the_first_admin_is_created_from_the_environment(monkeypatch):
    monkeypatch.setenv("DJANGO_SUPERUSER_EMAIL", "ops@example.com")
    monkeypatch.setenv("DJANGO_SUPERUSER_DISPLAY_NAME", "Ops")
    monkeypatch.setenv("DJANGO_SUPERUSER_PASSWORD", "a long production passphrase")

    call_command("createsuperuser", interactive=False, verbosity=0)

    user = User.objects.get(email="ops@example.com")
    assert (user.is_superuser, user.is_staff, user.display_name) == (True, True, "Ops")
    assert authenticate(username="ops@example.com", password="a long production passphrase") == user


@pytest.mark.django_db
def test_a_lost_encryption_key_is_recovered_by_a_rotation_and_issued_tokens_keep_verifying(settings):
    issued = token_issue(subject="u", audience="darktower-api", scopes=[], lifetime_seconds=600)

    settings.SIGNING_KEY_ENCRYPTION_KEY = "a new key: the old one was lost"
    signing._cache.invalidate()
    with pytest.raises(InvalidToken):
        token_issue(subject="u", audience="darktower-api", scopes=[], lifetime_seconds=600)
    call_command("rotate_signing_key", verbosity=0)
    fresh = token_issue(subject="u", audience="darktower-api", scopes=[], lifetime_seconds=600)

    assert token_verify(fresh.token, audience="darktower-api").subject == "u"
    assert token_verify(issued.token, audience="darktower-api").subject == "u"
