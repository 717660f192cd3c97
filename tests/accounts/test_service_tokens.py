"""Service credentials and service-token issuance, on the real database (the service layer)."""

from __future__ import annotations

import hashlib
import uuid

import pytest
from django.conf import settings

from accounts.models import ServiceCredential
from accounts.services.service_tokens import (
    CredentialRevocation,
    InvalidClient,
    InvalidScope,
    service_credential_create,
    service_credential_revoke,
    service_token_issue,
)
from accounts.tokens import token_verify
from audit.models import ActorType, AuditLog
from audit.services import audit_record
from darktower.errors import InvalidInput, NotFound, Unauthenticated
from darktower.redis import redis_client

pytestmark = pytest.mark.django_db


def _create(scopes=("mc:register", "mh:register"), name="mc fleet"):
    created = service_credential_create(name=name, scopes=scopes)
    return created.credential, created.client_secret


def test_create_stores_only_a_hash_of_the_secret_and_audits():
    credential, secret = _create(scopes=["mh:register", "mc:register", "mc:register"])
    row = ServiceCredential.objects.get(client_id=credential.client_id)
    assert row.secret_hash == hashlib.sha256(secret.encode()).hexdigest()
    assert secret not in row.secret_hash
    assert row.scopes == ["mc:register", "mh:register"]
    assert row.is_active
    assert len(secret) >= 43  # 256 random bits, base64url
    audit = AuditLog.objects.get(event_type="service_credential_created", target_id=credential.client_id)
    assert audit.metadata == {"name": "mc fleet", "scopes": ["mc:register", "mh:register"]}
    assert secret not in str(audit.metadata)


def test_created_credentials_are_unique_and_repr_hides_the_secret():
    created = service_credential_create(name="a", scopes=["mc:register"])
    other = service_credential_create(name="b", scopes=["mc:register"])
    assert created.credential.client_id != other.credential.client_id
    assert created.client_secret != other.client_secret
    assert created.client_secret not in repr(created)
    assert created.client_secret not in repr(created.credential)


@pytest.mark.parametrize(
    ("scopes", "field"),
    [([], "scopes"), (["meetings:create"], "scopes"), (["mc:register", "admin"], "scopes"), ([" ", ""], "scopes")],
)
def test_create_refuses_unknown_or_missing_scopes(scopes, field):
    with pytest.raises(InvalidInput) as caught:
        service_credential_create(name="x", scopes=scopes)
    assert field in caught.value.fields
    assert not ServiceCredential.objects.exists()


@pytest.mark.parametrize("name", ["", "   ", "n" * 256])
def test_create_refuses_a_bad_name(name):
    with pytest.raises(InvalidInput) as caught:
        service_credential_create(name=name, scopes=["mc:register"])
    assert "name" in caught.value.fields


def test_create_accepts_a_255_character_name():
    credential, _ = _create(name="n" * 255)
    assert len(credential.name) == 255


def test_issue_without_scope_grants_every_allowed_scope():
    credential, secret = _create()
    issued = service_token_issue(client_id=credential.client_id, client_secret=secret, scope=None)
    assert issued.scope == "mc:register mh:register"
    assert issued.expires_in == settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS
    claims = token_verify(issued.token, audience=settings.JWT_SERVICE_AUDIENCE)
    assert claims.subject == credential.client_id
    assert claims.scopes == {"mc:register", "mh:register"}
    assert claims.jti == issued.jti
    assert claims.claims["iss"] == settings.JWT_ISSUER
    assert claims.claims["exp"] - claims.claims["iat"] == settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS


def test_issue_uses_the_lifetime_setting(settings):
    settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS = 120
    credential, secret = _create()
    issued = service_token_issue(client_id=credential.client_id, client_secret=secret, scope="")
    assert issued.expires_in == 120
    claims = token_verify(issued.token, audience=settings.JWT_SERVICE_AUDIENCE)
    assert claims.claims["exp"] - claims.claims["iat"] == 120


def test_issued_token_is_not_valid_for_another_audience():
    credential, secret = _create()
    issued = service_token_issue(client_id=credential.client_id, client_secret=secret, scope=None)
    with pytest.raises(Exception, match="audience"):
        token_verify(issued.token, audience=settings.JWT_API_AUDIENCE)


@pytest.mark.parametrize(
    ("requested", "granted"),
    # One kind of member: Dark Tower's scopes for that kind beside ours (and its service_type).
    [("mc:register", "mc:register service.write.gc service.write.mh"),
     ("  mh:register  ", "mh:register service.write.gc service.write.mc"),
     ("mh:register mc:register mh:register", "mc:register mh:register")],
)
def test_issue_grants_a_requested_subset(requested, granted):
    credential, secret = _create()
    issued = service_token_issue(client_id=credential.client_id, client_secret=secret, scope=requested)
    assert issued.scope == granted


@pytest.mark.parametrize("requested", ["mh:register", "mc:register mh:register", "meetings:create", "MC:REGISTER"])
def test_issue_refuses_a_scope_beyond_the_credential(requested):
    credential, secret = _create(scopes=["mc:register"])
    with pytest.raises(InvalidScope):
        service_token_issue(client_id=credential.client_id, client_secret=secret, scope=requested)
    refusal = AuditLog.objects.get(event_type="service_token_refused", target_id=credential.client_id)
    assert refusal.result == "failure"
    assert refusal.error_message == "scope not allowed"


def test_issue_updates_last_used_and_audits_the_jti():
    credential, secret = _create()
    assert credential.last_used_at is None
    issued = service_token_issue(
        client_id=credential.client_id, client_secret=secret, scope=None, ip_address="10.1.2.3"
    )
    credential.refresh_from_db()
    assert credential.last_used_at is not None
    audit = AuditLog.objects.get(event_type="service_token_issued", target_id=credential.client_id)
    assert audit.actor_type == "service"
    assert audit.ip_address == "10.1.2.3"
    assert audit.metadata["jti"] == issued.jti
    assert issued.token not in str(audit.metadata)
    assert secret not in str(audit.metadata)


def test_wrong_secret_unknown_client_and_revoked_are_one_invalid_client():
    credential, secret = _create()
    other, _ = _create()
    attempts = [
        (credential.client_id, secret + "x"),
        (credential.client_id, ""),
        (credential.client_id, secret[:-1]),
        (other.client_id, secret),  # another client's secret
        ("svc_" + "0" * 24, secret),  # well-formed, unknown
        ("Not a client id!", secret),
        (credential.client_id, "x" * 10_000),
    ]
    messages = set()
    for client_id, attempt in attempts:
        with pytest.raises(InvalidClient) as caught:
            service_token_issue(client_id=client_id, client_secret=attempt, scope=None)
        messages.add(caught.value.message)
        assert attempt not in str(caught.value) or attempt == ""
    assert messages == {"Client authentication failed."}
    credential.refresh_from_db()
    assert credential.last_used_at is None
    refusals = AuditLog.objects.filter(event_type="service_token_refused")
    reasons = sorted(refusals.values_list("error_message", flat=True))
    # The malformed id is refused without touching the database or the audit trail.
    assert reasons == ["bad secret", "bad secret", "bad secret", "bad secret", "bad secret", "unknown client"]


def test_revoked_credential_gets_no_token():
    credential, secret = _create()
    service_token_issue(client_id=credential.client_id, client_secret=secret, scope=None)
    assert service_credential_revoke(client_id=credential.client_id).newly_revoked
    with pytest.raises(InvalidClient):
        service_token_issue(client_id=credential.client_id, client_secret=secret, scope=None)
    assert AuditLog.objects.filter(event_type="service_token_refused", error_message="revoked").count() == 1


def test_revoking_a_credential_revokes_its_unexpired_tokens_only():
    credential, secret = _create()
    other, other_secret = _create()
    live = [service_token_issue(client_id=credential.client_id, client_secret=secret, scope=None) for _ in range(2)]
    bystander = service_token_issue(client_id=other.client_id, client_secret=other_secret, scope=None)
    # An expired token's row: nothing to blacklist (it is refused for its expiry already). Written as issued, with
    # its past expiry: audit rows cannot be edited afterwards (audit_logs is append-only).
    expired_jti = str(uuid.uuid4())
    audit_record(
        event_type="service_token_issued", action="issue", actor_type=ActorType.SERVICE,
        target_type="service_credential", target_id=credential.client_id,
        metadata={"jti": expired_jti, "scope": "mc:register", "expires_at": "2000-01-01T00:00:00+00:00"},
    )
    for issued in live:
        token_verify(issued.token, audience=settings.JWT_SERVICE_AUDIENCE)

    revocation = service_credential_revoke(client_id=credential.client_id)

    assert revocation == CredentialRevocation(newly_revoked=True, tokens_revoked=2)
    for issued in live:
        with pytest.raises(Unauthenticated, match="revoked"):
            token_verify(issued.token, audience=settings.JWT_SERVICE_AUDIENCE)
    assert token_verify(bystander.token, audience=settings.JWT_SERVICE_AUDIENCE).subject == other.client_id
    assert not redis_client().exists(f"token:blacklist:{expired_jti}")
    ttl = redis_client().ttl(f"token:blacklist:{live[0].jti}")
    assert settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS - 5 <= ttl <= (
        settings.JWT_SERVICE_TOKEN_LIFETIME_SECONDS + settings.JWT_CLOCK_SKEW_SECONDS + 2
    )
    audit = AuditLog.objects.get(event_type="service_credential_revoked", target_id=credential.client_id)
    assert audit.metadata == {"tokens_revoked": 2}


def test_revoke_is_idempotent_audited_once_and_names_the_operator(operator):
    credential, _ = _create()
    first = service_credential_revoke(client_id=credential.client_id, actor_user_id=operator.pk)
    again = service_credential_revoke(client_id=credential.client_id, actor_user_id=operator.pk)
    assert (first.newly_revoked, again.newly_revoked) == (True, False)
    credential.refresh_from_db()
    assert not credential.is_active
    rows = AuditLog.objects.filter(event_type="service_credential_revoked", target_id=credential.client_id)
    assert [(row.actor_type, row.actor_user_id) for row in rows] == [("user", operator.pk)]


def test_revoke_unknown_client_is_not_found():
    with pytest.raises(NotFound):
        service_credential_revoke(client_id="svc_" + "1" * 24)
