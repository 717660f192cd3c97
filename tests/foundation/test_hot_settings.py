"""darktower.conf.hot_setting: the heartbeat path's cached settings follow every change of settings."""

from __future__ import annotations

from django.conf import settings
from django.test import override_settings

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
