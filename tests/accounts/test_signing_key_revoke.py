"""Revoking a compromised signing key (accounts.signing.signing_key_revoke): every token it signed is refused at
once in this process and within SIGNING_KEY_CACHE_SECONDS in every other one (each process's key cache), through
the service and `manage.py revoke_signing_key KID` (the admin's action:
tests/accounts/admin/test_signing_key_admin.py)."""

from __future__ import annotations

import pytest
from django.core.management import CommandError, call_command

from accounts import signing
from accounts.models import SigningKey
from accounts.signing import (
    _KeyCache,
    signing_key_active,
    signing_key_revoke,
    signing_key_rotate,
    signing_keys_published,
)
from accounts.tokens import token_issue, token_verify, token_verify_cached
from audit.models import AuditLog
from darktower.errors import NotFound, Unauthenticated

pytestmark = pytest.mark.django_db

AUD = "darktower-internal"


def issue() -> str:
    return token_issue(subject="svc_x", audience=AUD, scopes=["mc:register"], lifetime_seconds=600).token


def assert_refused(token: str) -> None:
    with pytest.raises(Unauthenticated, match="unknown signing key"):
        token_verify(token, audience=AUD)


class Clock:
    """An injected monotonic clock, moved by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_revoking_a_retired_key_ends_its_tokens_at_once_and_leaves_the_jwks():
    old_token = issue()
    old = signing_key_active().kid
    signing_key_rotate()
    new_token = issue()
    assert token_verify(old_token, audience=AUD) and token_verify_cached(old_token, audience=AUD)

    revoked = signing_key_revoke(kid=old)

    assert revoked.kid == old and revoked.replacement_kid is None
    assert old not in [key.kid for key in signing_keys_published()]
    assert token_verify_cached(old_token, audience=AUD) is None
    assert_refused(old_token)
    assert token_verify(new_token, audience=AUD).subject == "svc_x"
    row = AuditLog.objects.get(event_type="signing_key_revoked", target_id=old)
    assert row.target_type == "signing_key" and row.actor_user_id is None


def test_revoking_the_active_key_makes_a_new_one_active_first():
    token = issue()
    kid = signing_key_active().kid

    revoked = signing_key_revoke(kid=kid)

    assert revoked.replacement_kid is not None and revoked.replacement_kid != kid
    assert SigningKey.objects.get(is_active=True).kid == revoked.replacement_kid
    assert_refused(token)
    assert token_verify(issue(), audience=AUD).subject == "svc_x"
    assert signing_key_active().kid == revoked.replacement_kid


def test_revoking_an_unknown_key_is_not_found_and_writes_nothing():
    signing_key_active()
    with pytest.raises(NotFound):
        signing_key_revoke(kid="no-such-kid")
    assert not AuditLog.objects.filter(event_type="signing_key_revoked").exists()


def test_another_process_stops_accepting_a_revoked_key_within_the_cache_interval(settings):
    settings.SIGNING_KEY_CACHE_SECONDS = 30
    token = issue()
    kid = signing_key_active().kid
    clock = Clock()
    other = _KeyCache(clock=clock)  # another process's key cache, loaded before the revocation
    assert other.public_key(kid) is not None and other.published_cached(kid) is True

    signing_key_revoke(kid=kid)  # in this process

    clock.now += 29  # within the interval the other process may still accept it...
    assert other.published_cached(kid) is True
    clock.now += 2  # ...and no longer after it: the memo defers to a reload, which no longer finds the key
    assert other.published_cached(kid) is None
    assert other.public_key(kid) is None
    assert other.published_cached(kid) is False
    assert_refused(token)


def test_a_verified_token_in_another_process_is_refused_within_the_cache_interval(settings, monkeypatch):
    settings.SIGNING_KEY_CACHE_SECONDS = 30
    clock = Clock()
    other = _KeyCache(clock=clock)
    monkeypatch.setattr(signing, "_cache", other)  # this process plays the other one
    token = issue()
    kid = signing_key_active().kid
    assert token_verify(token, audience=AUD) and token_verify_cached(token, audience=AUD)

    with monkeypatch.context() as revoking:  # the revocation happens in a process of its own
        revoking.setattr(signing, "_cache", _KeyCache())
        signing_key_revoke(kid=kid)

    clock.now += 31
    assert token_verify_cached(token, audience=AUD) is None
    assert_refused(token)


def test_the_command_revokes_and_prints_the_replacement(capsys):
    token = issue()
    kid = signing_key_active().kid

    call_command("revoke_signing_key", kid)

    out = capsys.readouterr().out
    replacement = SigningKey.objects.get(is_active=True).kid
    assert kid in out and replacement in out
    assert_refused(token)
    with pytest.raises(CommandError, match="No such signing key"):
        call_command("revoke_signing_key", "no-such-kid")


def test_the_command_takes_a_kid_that_begins_with_a_dash():
    # A kid is a base64url thumbprint: one in 64 begins with "-", which must still be read as the kid.
    with pytest.raises(CommandError, match="No such signing key"):
        call_command("revoke_signing_key", "-no-such-kid")
