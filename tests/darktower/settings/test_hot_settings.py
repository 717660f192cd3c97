"""darktower.conf.hot_setting: the heartbeat path's cached settings follow every change of settings."""

from __future__ import annotations

from django.conf import settings
from django.core.signals import setting_changed
from django.test import override_settings

import darktower.conf
from darktower.conf import hot_setting


def test_a_hot_setting_is_the_setting():
    assert hot_setting("GRPC_HEARTBEAT_BURST") == settings.GRPC_HEARTBEAT_BURST
    assert hot_setting("JWT_SERVICE_AUDIENCE") == settings.JWT_SERVICE_AUDIENCE


def test_a_cached_hot_setting_follows_an_override_and_its_end():
    original = hot_setting("GRPC_HEARTBEAT_BURST")  # cached from here on

    with override_settings(GRPC_HEARTBEAT_BURST=original + 7):
        assert hot_setting("GRPC_HEARTBEAT_BURST") == original + 7

    assert hot_setting("GRPC_HEARTBEAT_BURST") == original


def test_a_cached_hot_setting_follows_the_settings_fixture(settings):
    hot_setting("FAST_HEARTBEAT_INTERVAL_MS")

    settings.FAST_HEARTBEAT_INTERVAL_MS = 1234

    assert hot_setting("FAST_HEARTBEAT_INTERVAL_MS") == 1234


def test_a_value_read_while_the_setting_changes_is_not_kept(monkeypatch):
    """The change (another thread's override) lands between the read and the store: the old value it read is
    answered once, as any read racing a change may be, but not cached."""
    class ChangingMidRead:
        def __getattr__(self, name: str) -> int:
            old = settings.GRPC_HEARTBEAT_BURST
            # What override_settings does in another thread: set the value, then send setting_changed.
            monkeypatch.setattr(darktower.conf, "settings", type("Changed", (), {name: old + 5})())
            setting_changed.send(sender=None, setting=name, value=old + 5, enter=True)
            return old

    original = settings.GRPC_HEARTBEAT_BURST
    setting_changed.send(sender=None, setting="GRPC_HEARTBEAT_BURST", value=original, enter=False)
    monkeypatch.setattr(darktower.conf, "settings", ChangingMidRead())

    try:
        assert hot_setting("GRPC_HEARTBEAT_BURST") == original
        assert hot_setting("GRPC_HEARTBEAT_BURST") == original + 5
    finally:
        setting_changed.send(sender=None, setting="GRPC_HEARTBEAT_BURST", value=original, enter=False)
