"""Users: what they may do (scopes), signing in and out.

Login failures are audited under the keyed hash of the email (never the email itself), as
`user_login` rows with target_type `login_email` and target_id the hash. That makes the audit trail
answer "how many failed logins for this account lately" from idx_audit_target (target_type, target_id),
which is what the login rate limit falls back to when Redis is unreachable (see `login_throttle_fallback`).
"""

from __future__ import annotations

import hashlib
import hmac
import math
from dataclasses import dataclass
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import transaction
from django.db.models.functions import Now

from accounts.models import User
from accounts.tokens import IssuedToken, TokenClaims, token_issue, token_revoke
from audit.models import ActorType, AuditLog, AuditResult
from audit.services import audit_record
from darktower.errors import InvalidInput, Throttled, Unauthenticated

MEETINGS_CREATE = "meetings:create"
MEETINGS_READ = "meetings:read"
MEETINGS_WRITE = "meetings:write"
RECORDINGS_READ = "recordings:read"
RECORDINGS_WRITE = "recordings:write"
CONTROLLERS_READ = "controllers:read"
CONTROLLERS_WRITE = "controllers:write"

REGULAR_USER_SCOPES = frozenset({MEETINGS_CREATE, MEETINGS_READ, MEETINGS_WRITE, RECORDINGS_READ, RECORDINGS_WRITE})
STAFF_SCOPES = REGULAR_USER_SCOPES | {CONTROLLERS_READ, CONTROLLERS_WRITE}
ALL_SCOPES = STAFF_SCOPES

# Each fleet scope needs the Django permissions that gate the same use in the admin, so that one group or user
# permission decides both doors: reading the fleet needs the admin's view permissions on controllers and media
# handlers; drain and undrain need its drain action, which the admin offers only on a fleet the user can view.
# Like the admin, they are for active staff only (the "operator viewer" and "operator" groups, migration
# accounts 0003, hold them; a superuser has every permission).
FLEET_SCOPE_PERMISSIONS: dict[str, tuple[str, ...]] = {
    CONTROLLERS_READ: ("controllers.view_meetingcontroller", "controllers.view_mediahandler"),
    CONTROLLERS_WRITE: ("controllers.view_meetingcontroller", "controllers.drain_meetingcontroller"),
}

LOGIN_EVENT = "user_login"
LOGIN_TARGET_TYPE = "login_email"


def user_scopes(user: User, *, among: frozenset[str] = ALL_SCOPES) -> frozenset[str]:
    """The one mapping from a user to scopes. User tokens carry these; API keys get a subset of them, and
    both are re-checked against this on every request (`among` the credential's own scopes), so a user who
    loses staff, a group or a permission loses the scopes it granted at once. The fleet scopes come from
    `user.has_perms` (the authentication backends, as in the admin): for a staff user who is not a superuser
    that reads its permissions and its groups' (two queries, cached on the user object), and only when a
    fleet scope is among those asked about; nobody else costs a query."""
    if not user.is_active:
        return frozenset()
    scopes = REGULAR_USER_SCOPES & among
    if user.is_staff:
        scopes |= {
            scope for scope, permissions in FLEET_SCOPE_PERMISSIONS.items()
            if scope in among and user.has_perms(permissions)
        }
    return scopes


def normalize_email(email: str) -> str:
    # UserManager.create_user lowercases the whole address; logins must find it the same way.
    return email.strip().lower()


def email_hash(email: str) -> str:
    """Keyed hash of an email for audit rows and rate-limit keys: stable per account, useless to a reader of
    the audit trail or of Redis who does not also hold SECRET_KEY."""
    return hmac.new(
        settings.SECRET_KEY.encode(), normalize_email(email).encode(), hashlib.sha256
    ).hexdigest()


@dataclass(frozen=True)
class LoginResult:
    user: User
    token: IssuedToken


def user_login(*, email: str, password: str, ip_address: str | None, user_agent: str | None) -> LoginResult:
    """Check the password with Django's hashers, record the login (last_login_at, an audit row) and issue an
    EdDSA user access token. Every failure answers the same Unauthenticated, so the response does not tell
    whether an account exists; a failure is audited too (committed even though the request fails)."""
    hashed = email_hash(email)
    user = User.objects.filter(email=normalize_email(email)).first()
    if user is None:
        # Same work as a real check, so the response time does not reveal unknown accounts.
        make_password(password)
        _audit_login_failure(hashed, None, "invalid_credentials", ip_address, user_agent)
        raise Unauthenticated("Invalid email or password.")
    # check_password() rehashes and saves the password when the hasher's parameters changed.
    if not user.check_password(password) or not user.is_active:
        reason = "inactive" if not user.is_active else "invalid_credentials"
        _audit_login_failure(hashed, user.pk, reason, ip_address, user_agent)
        raise Unauthenticated("Invalid email or password.")

    with transaction.atomic():
        User.objects.filter(pk=user.pk).update(last_login=Now())
        audit_record(
            event_type=LOGIN_EVENT, action="login", actor_type=ActorType.USER, actor_user_id=user.pk,
            target_type=LOGIN_TARGET_TYPE, target_id=hashed, ip_address=ip_address, user_agent=user_agent,
        )
        token = token_issue(
            subject=str(user.pk), audience=settings.JWT_API_AUDIENCE, scopes=sorted(user_scopes(user)),
            lifetime_seconds=settings.JWT_USER_TOKEN_LIFETIME_SECONDS,
        )
    return LoginResult(user=user, token=token)


def _audit_login_failure(
    hashed: str, user_id: object, reason: str, ip_address: str | None, user_agent: str | None
) -> None:
    audit_record(
        event_type=LOGIN_EVENT, action="login", actor_type=ActorType.USER, actor_user_id=user_id,
        result=AuditResult.FAILURE, error_message=reason, target_type=LOGIN_TARGET_TYPE, target_id=hashed,
        ip_address=ip_address, user_agent=user_agent,
    )


def user_logout(*, claims: TokenClaims | None, user_id: object) -> None:
    """Revoke the presented access token's jti until it expires (the blacklist lives in Redis)."""
    if claims is None:
        raise InvalidInput("Logout revokes a bearer token; revoke API keys with DELETE /api/v1/api-keys/{key_id}.")
    token_revoke(claims)
    audit_record(
        event_type="user_logout", action="logout", actor_type=ActorType.USER, actor_user_id=user_id,
        target_type="user", target_id=str(user_id),
    )


def login_throttle_fallback(*, email_hash_hex: str, ip_address: str | None) -> None:
    """The login limits when Redis is unreachable: count failed logins in the audit trail over the last window.

    Fail closed would lock every user out during a Redis outage; fail open would lift brute-force protection
    exactly when an attacker may have caused the outage. Failed logins are already audited in the same
    database, so they are counted instead, with the same limits as in Redis: per account and address and per
    account from idx_audit_target (target_type, target_id), per address from idx_audit_created_at (one window
    of rows). Like Redis, only failures count: a user who signs in correctly is never held back by them.
    """
    window = settings.RATE_LIMIT_WINDOW_SECONDS
    recent = AuditLog.objects.filter(
        event_type=LOGIN_EVENT, result=AuditResult.FAILURE, created_at__gte=Now() - timedelta(seconds=window)
    )
    account = recent.filter(target_type=LOGIN_TARGET_TYPE, target_id=email_hash_hex)
    by_account = account.count()
    by_account_and_address = account.filter(ip_address=ip_address).count() if ip_address else 0
    by_address = recent.filter(ip_address=ip_address).count() if ip_address else 0
    if (
        by_account_and_address >= settings.RATE_LIMIT_LOGIN_PER_EMAIL_AND_IP
        or by_account >= settings.RATE_LIMIT_LOGIN_PER_EMAIL
        or by_address >= settings.RATE_LIMIT_LOGIN_PER_IP
    ):
        raise Throttled("Too many failed logins; retry later.", retry_after_seconds=max(1, math.ceil(window)))
