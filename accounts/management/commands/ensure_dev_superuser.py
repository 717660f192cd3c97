"""Create or keep the development superuser and print its credentials (DEBUG only; `make run` calls it)."""

from __future__ import annotations

import os
import secrets
from pathlib import Path
from typing import Any

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError


def dev_password() -> str:
    """DEV_SUPERUSER_PASSWORD, or a random one kept in DATA_DIR so that every run prints the same."""
    if settings.DEV_SUPERUSER_PASSWORD:
        return settings.DEV_SUPERUSER_PASSWORD
    path = Path(settings.DATA_DIR) / "dev-superuser.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        # Mode 600: readable by this user only. O_EXCL: of two concurrent first runs, one writes it.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    password = secrets.token_urlsafe(12)
    with os.fdopen(fd, "w") as handle:
        handle.write(password + "\n")
    return password


def keep_email(email: str) -> None:
    """The login email beside the password file, for scripts (the README's walkthrough reads both)."""
    path = Path(settings.DATA_DIR) / "dev-superuser-email.txt"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(email + "\n")


class Command(BaseCommand):
    help = "Create the development superuser (or keep it, resetting a changed password) and print its credentials."

    def handle(self, *args: Any, **options: Any) -> None:
        if not settings.DEBUG:
            raise CommandError("ensure_dev_superuser only runs with DEBUG on: it prints a password.")
        email, password = settings.DEV_SUPERUSER_EMAIL.lower(), dev_password()
        users = get_user_model().objects
        user = users.filter(email__iexact=email).first()
        if user is None:
            users.create_superuser(email=email, password=password, display_name="Dev Admin")
        elif not (user.check_password(password) and user.is_active and user.is_staff and user.is_superuser):
            user.set_password(password)
            users.filter(pk=user.pk).update(password=user.password, is_active=True, is_staff=True, is_superuser=True)
        keep_email(email)
        self.stdout.write(f"superuser {email}\npassword  {password}")
