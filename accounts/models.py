"""People and machines that can authenticate: users, their OAuth links, API keys."""

from __future__ import annotations

import uuid

import pgtrigger
from django.contrib.auth.base_user import AbstractBaseUser, BaseUserManager
from django.contrib.auth.models import PermissionsMixin
from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.functions import RandomUUID
from django.db import models
from django.db.models.functions import Now
from django.utils import timezone


def updated_at_trigger(table: str, *, skip_when_now: bool = False) -> pgtrigger.Trigger:
    """BEFORE UPDATE trigger that bumps updated_at, so raw SQL updates bump it too (not auto_now).

    skip_when_now: the function runs only when the new row's updated_at is not now() already, a WHEN that
    PostgreSQL evaluates without calling it. Every updated row still ends with updated_at = now(); a statement
    that sets it to now() itself just saves the call. For the members tables: the heartbeat flush updates
    thousands of rows a second, and the call is a large share of PostgreSQL's CPU per row (bench/FIGURES.md)."""
    return pgtrigger.Trigger(
        name=f"{table}_touch_updated_at",
        when=pgtrigger.Before,
        operation=pgtrigger.Update,
        condition=(
            pgtrigger.Condition("NEW.updated_at IS DISTINCT FROM now()") if skip_when_now else None
        ),
        func="NEW.updated_at = now(); RETURN NEW;",
    )


class UserManager(BaseUserManager["User"]):
    use_in_migrations = True

    def create_user(self, email: str, password: str | None = None, **extra: object) -> User:
        if not email:
            raise ValueError("email is required")
        user = self.model(email=self.normalize_email(email).lower(), **extra)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_superuser(self, email: str, password: str | None = None, **extra: object) -> User:
        extra.setdefault("is_staff", True)
        extra.setdefault("is_superuser", True)
        return self.create_user(email, password, **extra)


class User(AbstractBaseUser, PermissionsMixin):
    """A person. Email is the login name; `password_hash` is NULL for users who only sign in by OAuth."""

    user_id = models.UUIDField(verbose_name="user ID", primary_key=True, default=uuid.uuid4, db_default=RandomUUID())
    email = models.EmailField(max_length=255, unique=True)
    display_name = models.CharField(max_length=255)
    # Django's `password` and `last_login` live in the table's password_hash / last_login_at columns.
    # Nullable where Django's base declares a string: OAuth-only users have no password hash.
    password = models.CharField(  # type: ignore[assignment]
        max_length=255, null=True, blank=True, db_column="password_hash",
        db_comment="Django password hash (algorithm$iterations$salt$hash); NULL for OAuth-only users",
    )
    last_login = models.DateTimeField(null=True, blank=True, db_column="last_login_at")
    is_active = models.BooleanField(verbose_name="active", default=True, db_default=True)
    is_staff = models.BooleanField(
        verbose_name="staff status",
        default=False, db_default=False, db_comment="May sign in to the operators' admin"
    )
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    metadata = models.JSONField(
        default=dict, db_default={}, blank=True, null=True, db_comment="Free-form profile data; no secrets"
    )

    objects = UserManager()

    USERNAME_FIELD = "email"
    EMAIL_FIELD = "email"
    REQUIRED_FIELDS = ["display_name"]

    class Meta:
        db_table = "users"
        indexes = [
            # Fixed index names; email lookups at login also use the unique index.
            models.Index(fields=["email"], name="idx_users_email"),
            models.Index(fields=["created_at"], name="idx_users_created_at"),
        ]
        triggers = [updated_at_trigger("users")]

    def __str__(self) -> str:
        return self.display_name or str(self.user_id)

    def __repr__(self) -> str:
        # No email in repr: it is personal data and repr ends up in logs.
        return f"<User {self.user_id}>"

    def has_usable_password(self) -> bool:
        return bool(self.password) and super().has_usable_password()


class OAuthProvider(models.Model):
    """A user's link to an external identity provider; provider tokens are stored encrypted only."""

    id = models.BigAutoField(primary_key=True)
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="oauth_providers")
    provider = models.CharField(max_length=50, db_comment="Identity provider name: google, github, ...")
    provider_user_id = models.CharField(
        verbose_name="provider's user ID", max_length=255, db_comment="The user's id at the provider (its `sub`)")
    access_token_encrypted = models.BinaryField(
        verbose_name="access token (encrypted)",
        null=True, blank=True, db_comment="Provider access token, encrypted at rest; never shown or logged"
    )
    refresh_token_encrypted = models.BinaryField(
        verbose_name="refresh token (encrypted)",
        null=True, blank=True, db_comment="Provider refresh token, encrypted at rest; never shown or logged"
    )
    token_expires_at = models.DateTimeField(null=True, blank=True, db_comment="When the provider access token expires")
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)

    class Meta:
        verbose_name = "OAuth provider"
        verbose_name_plural = "OAuth providers"
        db_table = "oauth_providers"
        constraints = [
            models.UniqueConstraint(fields=["provider", "provider_user_id"], name="oauth_providers_provider_user_key"),
        ]
        indexes = [models.Index(fields=["user"], name="idx_oauth_user_id")]
        triggers = [updated_at_trigger("oauth_providers")]

    def __str__(self) -> str:
        return f"{self.provider}:{self.provider_user_id}"

    def __repr__(self) -> str:
        return f"<OAuthProvider {self.provider} user={self.user_id}>"


class ApiKey(models.Model):
    """A key for programmatic access. Only a hash and a display prefix are stored, never the key."""

    key_id = models.UUIDField(verbose_name="key ID", primary_key=True, default=uuid.uuid4, db_default=RandomUUID())
    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_keys")
    key_hash = models.CharField(max_length=255, unique=True, db_comment="SHA-256 hex digest of the whole key")
    key_prefix = models.CharField(max_length=20, db_comment="Public part of the key, shown to identify it")
    name = models.CharField(max_length=255)
    scopes = ArrayField(models.TextField(), db_comment="Granted scopes, e.g. meetings:create, meetings:read")
    is_active = models.BooleanField(
        verbose_name="active", default=True, db_default=True, db_comment="False once revoked")
    last_used_at = models.DateTimeField(
        null=True, blank=True, db_comment="Updated at most once a minute per key to keep auth cheap"
    )
    expires_at = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)

    class Meta:
        verbose_name = "API key"
        verbose_name_plural = "API keys"
        db_table = "api_keys"
        indexes = [
            models.Index(fields=["user"], name="idx_api_keys_user_id"),
            models.Index(fields=["key_hash"], name="idx_api_keys_hash"),
        ]
        triggers = [updated_at_trigger("api_keys")]

    def __str__(self) -> str:
        return f"{self.name} ({self.key_prefix})"

    def __repr__(self) -> str:
        return f"<ApiKey {self.key_prefix}>"


class ServiceCredential(models.Model):
    """OAuth 2.0 client credentials of a service (an MC, an MH). The secret is stored only as a hash."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, db_default=RandomUUID())
    client_id = models.CharField(
        verbose_name="client ID", max_length=64, unique=True, db_comment="Public client identifier")
    name = models.CharField(max_length=255, db_comment="What the credential is for, e.g. mc-us-east-1 fleet")
    secret_hash = models.CharField(
        max_length=128, db_comment="SHA-256 hex of the client secret (a 256-bit random value, so no slow hash)"
    )
    scopes = ArrayField(models.TextField(), default=list, db_comment="Scopes it may request, e.g. mc:register")
    is_active = models.BooleanField(
        verbose_name="active", default=True, db_default=True, db_comment="False once revoked")
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    updated_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    last_used_at = models.DateTimeField(null=True, blank=True, db_comment="Last token issued to it")

    class Meta:
        db_table = "service_credentials"
        triggers = [updated_at_trigger("service_credentials")]

    def __str__(self) -> str:
        return f"{self.name} ({self.client_id})"

    def __repr__(self) -> str:
        return f"<ServiceCredential {self.client_id}>"


class SigningKey(models.Model):
    """An Ed25519 key that signs our JWTs. The private half is encrypted at rest; the public half stays
    published in the JWKS until every token it signed has expired."""

    kid = models.CharField(verbose_name="key ID", max_length=64, primary_key=True, db_comment="JWT header kid")
    algorithm = models.CharField(max_length=20, default="EdDSA", db_default="EdDSA")
    public_key = models.BinaryField(db_comment="Raw 32-byte Ed25519 public key")
    private_key_encrypted = models.BinaryField(
        verbose_name="private key (encrypted)",
        db_comment="Raw private key encrypted with SIGNING_KEY_ENCRYPTION_KEY (Fernet)"
    )
    is_active = models.BooleanField(
        verbose_name="active",
        default=True, db_default=True, db_comment="The one key that signs new tokens"
    )
    created_at = models.DateTimeField(default=timezone.now, db_default=Now(), editable=False)
    retired_at = models.DateTimeField(null=True, blank=True, db_comment="When it stopped signing")
    publish_until = models.DateTimeField(
        null=True, blank=True, db_comment="Dropped from the JWKS after this (retired_at + longest token lifetime)"
    )

    class Meta:
        db_table = "signing_keys"
        constraints = [
            models.UniqueConstraint(
                fields=["is_active"], condition=models.Q(is_active=True), name="uq_signing_keys_one_active"
            ),
            models.CheckConstraint(condition=models.Q(algorithm="EdDSA"), name="signing_keys_algorithm_eddsa"),
        ]

    def __str__(self) -> str:
        return self.kid

    def __repr__(self) -> str:
        return f"<SigningKey {self.kid} active={self.is_active}>"
