"""Fixtures of the foundation tests."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # Users get real passwords (factories, demo users); PBKDF2 at Django's default cost takes ~0.2 s each here.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
