"""Signing keys (accounts.signing): encrypted at rest, RFC 7638 kids, one active key, rotation windows."""

from __future__ import annotations

import base64
import time
from datetime import timedelta

import jwt
import pytest
from cryptography.fernet import InvalidToken
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from django.conf import settings
from django.db import IntegrityError, transaction
from django.utils import timezone
from joserfc.jwk import OKPKey

from accounts.models import SigningKey
from accounts.signing import (
    _fernet,
    _new_key_row,
    public_jwk,
    signing_key_active,
    signing_key_rotate,
    signing_keys_published,
)
from accounts.tokens import token_verify
from audit.models import AuditLog

pytestmark = pytest.mark.django_db


def test_first_use_creates_one_active_key_and_audits_it():
    assert not SigningKey.objects.exists()
    signer = signing_key_active()
    key = SigningKey.objects.get()
    assert key.is_active and key.kid == signer.kid and key.algorithm == "EdDSA"
    assert signing_key_active().kid == signer.kid  # cached, not a second key
    assert SigningKey.objects.count() == 1
    assert AuditLog.objects.filter(event_type="signing_key_created", target_id=key.kid).count() == 1


def test_the_private_key_is_encrypted_at_rest():
    signer = signing_key_active()
    key = SigningKey.objects.get(kid=signer.kid)
    private_raw = signer.private_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    stored = bytes(key.private_key_encrypted)
    assert private_raw not in stored
    assert base64.urlsafe_b64encode(private_raw).rstrip(b"=") not in stored
    assert _fernet().decrypt(stored) == private_raw


def test_another_encryption_key_cannot_read_the_stored_key(settings):
    stored = bytes(SigningKey.objects.get(kid=signing_key_active().kid).private_key_encrypted)
    settings.SIGNING_KEY_ENCRYPTION_KEY = "a different key entirely"
    with pytest.raises(InvalidToken):
        _fernet().decrypt(stored)


def test_the_kid_is_the_rfc7638_thumbprint_and_the_jwk_is_rfc8037():
    key = SigningKey.objects.get(kid=signing_key_active().kid)
    jwk = public_jwk(key)
    assert jwk["kty"] == "OKP" and jwk["crv"] == "Ed25519" and jwk["alg"] == "EdDSA" and jwk["use"] == "sig"
    assert "d" not in jwk
    assert "=" not in jwk["x"]
    assert base64.urlsafe_b64decode(jwk["x"] + "=") == bytes(key.public_key)
    assert len(bytes(key.public_key)) == 32
    assert OKPKey.import_key(jwk).thumbprint() == key.kid == jwk["kid"]


def test_only_one_key_may_be_active():
    signing_key_active()
    key = SigningKey.objects.get()
    with pytest.raises(IntegrityError), transaction.atomic():
        SigningKey.objects.create(kid="second", public_key=b"x" * 32, private_key_encrypted=b"y", is_active=True)
    assert SigningKey.objects.get(is_active=True).kid == key.kid


def test_rotation_retires_the_old_key_for_the_longest_token_lifetime():
    old = signing_key_active().kid
    new = signing_key_rotate()
    assert new.kid != old
    retired = SigningKey.objects.get(kid=old)
    assert not retired.is_active
    longest = max(settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS, settings.JWT_USER_TOKEN_LIFETIME_SECONDS,
                  settings.JWT_MEETING_TOKEN_LIFETIME_SECONDS) + settings.JWT_CLOCK_SKEW_SECONDS
    assert retired.publish_until - retired.retired_at == timedelta(seconds=longest)
    assert SigningKey.objects.filter(is_active=True).count() == 1
    assert signing_key_active().kid == new.kid
    audit = AuditLog.objects.get(event_type="signing_key_rotated", target_id=new.kid)
    assert audit.metadata == {"retired": [old]}


def test_published_keys_are_the_active_one_and_retired_ones_within_reach():
    first = signing_key_active().kid
    second = signing_key_rotate().kid
    third = signing_key_rotate().kid
    assert [key.kid for key in signing_keys_published()] == [third, second, first]
    SigningKey.objects.filter(kid=first).update(publish_until="2000-01-01T00:00:00Z")
    assert [key.kid for key in signing_keys_published()] == [third, second]


def test_a_key_added_by_another_process_is_found_by_its_kid_without_waiting_for_the_cache():
    signing_key_active()  # this process has loaded and cached the keys
    # Another process rotates: a new key row appears that this process's cache has never seen.
    row = _new_key_row()
    row.is_active = False
    row.publish_until = timezone.now() + timedelta(hours=1)
    row.save(force_insert=True)
    private = Ed25519PrivateKey.from_private_bytes(_fernet().decrypt(bytes(row.private_key_encrypted)))
    now = int(time.time())
    token = jwt.encode(
        {"iss": settings.JWT_ISSUER, "sub": "svc_b", "aud": "x", "iat": now, "nbf": now, "exp": now + 60,
         "jti": "j1", "scope": ""},
        private, algorithm="EdDSA", headers={"kid": row.kid},
    )
    assert token_verify(token, audience="x").subject == "svc_b"
