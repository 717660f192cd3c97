"""Make a new signing key active; the old one stays published in the JWKS until its tokens have expired."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from accounts.signing import signing_key_rotate


class Command(BaseCommand):
    help = "Rotate the JWT signing key and print the new key id (kid)."

    def handle(self, *args: Any, **options: Any) -> None:
        key = signing_key_rotate()
        self.stdout.write(key.kid)
