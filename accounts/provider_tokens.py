"""Encryption at rest of the tokens identity providers give us (oauth_providers' access and refresh tokens).

Fernet (AES-128-CBC + HMAC-SHA256) under keys derived with HKDF from OIDC_TOKEN_ENCRYPTION_KEYS. The first key
encrypts; every listed key decrypts (MultiFernet), so a rotation puts a new key first, leaves the old ones in
place until `manage.py oidc_tokens_reencrypt` has rewritten every row under the new one, and then drops them.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings


def _fernet(secret: str) -> Fernet:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"darktower-provider-tokens", info=b"fernet-v1"
    ).derive(secret.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


def _keys() -> MultiFernet:
    return MultiFernet([_fernet(secret) for secret in settings.OIDC_TOKEN_ENCRYPTION_KEYS])


def provider_token_encrypt(token: str | None) -> bytes | None:
    return None if token is None else _keys().encrypt(token.encode())


def provider_token_decrypt(ciphertext: bytes | memoryview | None) -> str | None:
    """The token; raises cryptography.fernet.InvalidToken when no configured key opens it."""
    return None if ciphertext is None else _keys().decrypt(bytes(ciphertext)).decode()


def provider_token_rotate(ciphertext: bytes | memoryview | None) -> bytes | None:
    """The same token encrypted under the first key (unchanged in meaning; a new ciphertext)."""
    return None if ciphertext is None else _keys().rotate(bytes(ciphertext))
