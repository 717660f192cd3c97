"""`manage.py ensure_dev_superuser`: the credentials `make run` prints always log in, and only in DEBUG."""

from __future__ import annotations

import stat
from io import StringIO

import pytest
from django.contrib.auth import authenticate
from django.core.management import CommandError, call_command

from accounts.models import User


@pytest.fixture
def dev_settings(settings, tmp_path):
    settings.DEBUG = True
    settings.DATA_DIR = tmp_path
    settings.DEV_SUPERUSER_EMAIL = "Admin@Darktower.Local"
    settings.DEV_SUPERUSER_PASSWORD = None
    return settings


def ensure() -> dict[str, str]:
    out = StringIO()
    call_command("ensure_dev_superuser", stdout=out)
    return dict(line.split(maxsplit=1) for line in out.getvalue().splitlines())


@pytest.mark.django_db
def test_creates_a_superuser_whose_random_password_is_kept_for_the_next_run(dev_settings, tmp_path):
    first = ensure()
    second = ensure()

    assert first == second
    assert first["superuser"] == "admin@darktower.local"
    user = User.objects.get(email="admin@darktower.local")
    assert (user.is_superuser, user.is_staff, user.is_active, user.display_name) == (True, True, True, "Dev Admin")
    assert authenticate(username="admin@darktower.local", password=first["password"]) == user
    stored = tmp_path / "dev-superuser.txt"
    assert stored.read_text().strip() == first["password"]
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert User.objects.count() == 1


@pytest.mark.django_db
def test_a_changed_password_or_revoked_flag_is_restored(dev_settings):
    password = ensure()["password"]
    user = User.objects.get(email="admin@darktower.local")
    user.set_password("something-else-entirely")
    user.is_staff = False
    user.save()

    ensure()

    user.refresh_from_db()
    assert user.is_staff
    assert user.check_password(password)


@pytest.mark.django_db
def test_uses_the_configured_password_without_writing_a_file(dev_settings, tmp_path):
    dev_settings.DEV_SUPERUSER_PASSWORD = "a-configured-dev-password"

    assert ensure()["password"] == "a-configured-dev-password"
    assert not (tmp_path / "dev-superuser.txt").exists()


@pytest.mark.django_db
def test_refuses_without_debug(dev_settings):
    dev_settings.DEBUG = False

    with pytest.raises(CommandError, match="DEBUG"):
        call_command("ensure_dev_superuser", stdout=StringIO())

    assert not User.objects.exists()


@pytest.mark.django_db
def test_the_login_email_is_kept_beside_the_password(dev_settings, tmp_path):
    first = ensure()
    stored = tmp_path / "dev-superuser-email.txt"
    assert stored.read_text() == first["superuser"] + "\n" == "admin@darktower.local\n"

    dev_settings.DEV_SUPERUSER_EMAIL = "ops@darktower.local"
    ensure()

    assert stored.read_text() == "ops@darktower.local\n"
