"""Settings for the Dark Tower Global Controller.

This is the only module that reads the process environment. Every variable is documented in
`.env.example`; bad values stop the process with ImproperlyConfigured instead of being guessed.
"""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import overload
from urllib.parse import parse_qsl, quote, urlencode

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}


# With a string default the value is a string; only a None default can come back as None.
@overload
def env_str(name: str, default: str) -> str: ...
@overload
def env_str(name: str, default: None = None) -> str | None: ...
def env_str(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return default if value is None else value


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be a boolean (1/0, true/false), got {value!r}")


def env_int(name: str, default: int, *, minimum: int | None = None, maximum: int | None = None) -> int:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be an integer, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {number}")
    return number


def env_float(name: str, default: float, *, minimum: float | None = None, maximum: float | None = None) -> float:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        return default
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {value!r}") from None
    if minimum is not None and number < minimum:
        raise ImproperlyConfigured(f"{name} must be >= {minimum}, got {number}")
    if maximum is not None and number > maximum:
        raise ImproperlyConfigured(f"{name} must be <= {maximum}, got {number}")
    return number


def env_list(name: str, default: list[str]) -> list[str]:
    value = os.environ.get(name)
    if value is None:
        return default
    return [item.strip() for item in value.split(",") if item.strip()]


def env_secret(name: str) -> str | None:
    """A secret from NAME, or from the file named by NAME_FILE (Docker/Kubernetes secrets)."""
    file_name = os.environ.get(f"{name}_FILE")
    if file_name:
        try:
            return Path(file_name).read_text().strip()
        except OSError as exc:
            raise ImproperlyConfigured(f"{name}_FILE points at an unreadable file: {exc.strerror}") from None
    return os.environ.get(name) or None


# --- Core -------------------------------------------------------------------------------------

DEBUG = env_bool("DEBUG", False)

SECRET_KEY = env_secret("SECRET_KEY") or ""
if not SECRET_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SECRET_KEY is required when DEBUG is off. Set SECRET_KEY (or SECRET_KEY_FILE), "
            "or set DEBUG=1 for local development."
        )
    SECRET_KEY = "django-insecure-dev-only-key-do-not-use-in-production"

ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"] if DEBUG else [])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])
# JSON in the API's error shape under /api/, Django's page elsewhere (darktower.api.errors).
CSRF_FAILURE_VIEW = "darktower.api.errors.csrf_failure"

# Where the embedded PostgreSQL and Redis keep their data when DATABASE_URL / REDIS_URL are unset.
DATA_DIR = Path(env_str("DARKTOWER_DATA_DIR", str(BASE_DIR / ".data")))
EMBEDDED_PG_DIR = DATA_DIR / "pg"
EMBEDDED_REDIS_SOCKET = DATA_DIR / "redis.sock"

# Identifies this process in `meeting_assignments.assigned_by_gc_id` and in logs.
GC_ID = env_str("GC_ID", None) or f"gc-{os.uname().nodename}"

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "django.contrib.postgres",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    # Swagger UI's files for /api/docs/, served from here (WhiteNoise): a CDN's script would run on the admin's origin.
    "drf_spectacular_sidecar",
    "django_grpc_framework",
    "django_celery_beat",
    "pgtrigger",
    "darktower",  # project-wide management commands (check_db)
    "accounts",
    "controllers",
    "meetings",
    "audit",
]

MIDDLEWARE = [
    # First: it times everything below it and sees the final status (darktower/metrics.py).
    "darktower.metrics.MetricsMiddleware",
    # Before SecurityMiddleware: X-Forwarded-Proto counts only from a trusted proxy (darktower/client_address.py).
    "darktower.client_address.ForwardedProtoMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Before anything reads the body: /api/ bodies over DATA_UPLOAD_MAX_MEMORY_SIZE answer 413 JSON.
    "darktower.api.middleware.ApiBodyLimitMiddleware",
    # A view that cannot get or keep a database connection answers 503 with Retry-After (darktower/api/errors.py).
    "darktower.api.errors.DatabaseUnavailableMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    # The session's user and messages, for every request but the API's that carry their own credentials (a bearer
    # token, an API key): those have no use for them (darktower/api/middleware.py).
    "darktower.api.middleware.BrowserAuthenticationMiddleware",
    "darktower.api.middleware.BrowserMessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "darktower.urls"
WSGI_APPLICATION = "darktower.wsgi.application"
ASGI_APPLICATION = "darktower.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

# --- Database ---------------------------------------------------------------------------------

DATABASE_URL = env_str("DATABASE_URL", None)
# Each process (a gunicorn worker, the gRPC server, a Celery worker) lends its threads connections from a pool of
# at most DB_POOL_MAX_SIZE; a thread that finds none free within DB_POOL_TIMEOUT_SECONDS gets the same "database
# unavailable, retry" as a refused connection. The sum over all processes is what PostgreSQL must admit (README,
# "Database connections"). 0 turns the pool off: then one connection per thread, kept DB_CONN_MAX_AGE seconds.
DB_POOL_MAX_SIZE = env_int("DB_POOL_MAX_SIZE", 10, minimum=0, maximum=1000)
DB_POOL_MIN_SIZE = env_int("DB_POOL_MIN_SIZE", min(2, DB_POOL_MAX_SIZE), minimum=0, maximum=DB_POOL_MAX_SIZE)
DB_POOL_TIMEOUT_SECONDS = env_float("DB_POOL_TIMEOUT_SECONDS", 3.0, minimum=0.05, maximum=60.0)
DB_CONN_MAX_AGE = env_int("DB_CONN_MAX_AGE", 60, minimum=0)
# The pool checks a connection (one empty round trip) before lending it only when it has been idle this long; one
# given back sooner is lent as it is (darktower/postgresql/base.py).
DB_POOL_CHECK_IDLE_SECONDS = env_float("DB_POOL_CHECK_IDLE_SECONDS", 1.0, minimum=0.0, maximum=3600.0)
# A pool hands each request a connection and takes it back at the request's end: Django refuses persistent
# connections with a pool.
CONN_MAX_AGE = 0 if DB_POOL_MAX_SIZE else DB_CONN_MAX_AGE
if DATABASE_URL:
    _default_db = dj_database_url.parse(DATABASE_URL, conn_max_age=CONN_MAX_AGE, conn_health_checks=True)
else:
    # The embedded server (pgserver) listens on a unix socket inside its data directory only.
    _default_db = dj_database_url.parse(
        f"postgresql://postgres@{quote(str(EMBEDDED_PG_DIR), safe='')}/postgres",
        conn_max_age=CONN_MAX_AGE,
        conn_health_checks=True,
    )
_default_db.setdefault("OPTIONS", {})
# dj-database-url leaves `?host=/socket/dir` in OPTIONS; HOST is where Django and our tools look for it.
if not _default_db.get("HOST") and "host" in _default_db["OPTIONS"]:
    _default_db["HOST"] = _default_db["OPTIONS"].pop("host")
_default_db["OPTIONS"].setdefault("application_name", env_str("DB_APPLICATION_NAME", "darktower"))
# Django's PostgreSQL backend, whose pool checks only the connections idle for DB_POOL_CHECK_IDLE_SECONDS or more.
_default_db["ENGINE"] = "darktower.postgresql"
if DB_POOL_MAX_SIZE:
    # The backend checks a connection idle past the bound before lending it, so one that died while idle in the
    # pool (a server restart, a failover, a proxy's idle timeout) is replaced at checkout instead of failing the
    # request it is lent to. Django's own check (CONN_HEALTH_CHECKS) would check every connection it lends.
    _default_db["CONN_HEALTH_CHECKS"] = False
    _default_db["OPTIONS"]["pool"] = {
        "min_size": DB_POOL_MIN_SIZE, "max_size": DB_POOL_MAX_SIZE, "timeout": DB_POOL_TIMEOUT_SECONDS,
    }
# Statements run through a server-binding cursor (darktower.db: the join, the heartbeat flush, the capacity cache)
# are prepared on their connection (a named statement of the protocol), so PostgreSQL parses and plans each once per
# connection; Django's own cursors bind on the client and never prepare. Off for a pooler that cannot keep prepared
# statements: PgBouncer in transaction mode before 1.21, or without max_prepared_statements (README).
DB_PREPARED_STATEMENTS = env_bool("DB_PREPARED_STATEMENTS", True)
# psycopg's count of runs before it prepares a statement on its own (a prepared_cursor prepares at once); None, as
# Django sets it by default, prepares nothing.
_default_db["OPTIONS"]["prepare_threshold"] = 5 if DB_PREPARED_STATEMENTS else None
_default_db["TEST"] = {"NAME": env_str("DB_TEST_NAME", "test_darktower")}
DATABASES = {"default": _default_db}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis ------------------------------------------------------------------------------------

REDIS_URL = env_str("REDIS_URL", None) or f"unix://{EMBEDDED_REDIS_SOCKET}"
# Socket timeouts keep a dead Redis from stalling a request: rate limits fail open after this.
REDIS_SOCKET_TIMEOUT_SECONDS = env_float("REDIS_SOCKET_TIMEOUT_SECONDS", 0.5, minimum=0.01)


def _celery_broker_url(redis_url: str) -> str:
    # kombu names unix sockets redis+socket://, redis-py names them unix://; kombu also ignores a
    # socket URL's `db=N` and reads the database number from `virtual_host=N` only.
    if not redis_url.startswith("unix://"):
        return redis_url
    path, _, query = redis_url[len("unix://") :].partition("?")
    params = [("virtual_host" if name == "db" else name, value) for name, value in parse_qsl(query)]
    return f"redis+socket://{path}" + (f"?{urlencode(params)}" if params else "")


CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", None) or _celery_broker_url(REDIS_URL)
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND", None) or CELERY_BROKER_URL
CELERY_TASK_ALWAYS_EAGER = env_bool("CELERY_TASK_ALWAYS_EAGER", False)
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_SERIALIZER = "json"
CELERY_RESULT_SERIALIZER = "json"
CELERY_ACCEPT_CONTENT = ["json"]
CELERY_RESULT_EXPIRES = 3600
CELERY_TIMEZONE = "UTC"
CELERY_BEAT_SCHEDULER = "django_celery_beat.schedulers:DatabaseScheduler"
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True

# --- Auth -------------------------------------------------------------------------------------

AUTH_USER_MODEL = "accounts.User"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# JWTs (service tokens, user access tokens, meeting tokens) are EdDSA / Ed25519, signed with keys
# from the signing_keys table; this key encrypts their private halves at rest.
JWT_ISSUER = env_str("JWT_ISSUER", "darktower-gc")
JWT_SERVICE_AUDIENCE = env_str("JWT_SERVICE_AUDIENCE", "darktower-internal")
JWT_API_AUDIENCE = env_str("JWT_API_AUDIENCE", "darktower-api")
JWT_MEETING_AUDIENCE = env_str("JWT_MEETING_AUDIENCE", "darktower-mc")
JWT_SERVICE_TOKEN_LIFETIME_SECONDS = env_int("JWT_SERVICE_TOKEN_LIFETIME_SECONDS", 3600, minimum=60, maximum=86400)
JWT_USER_TOKEN_LIFETIME_SECONDS = env_int("JWT_USER_TOKEN_LIFETIME_SECONDS", 3600, minimum=60, maximum=86400)
# The token the GC presents to MCs (accounts.services.service_tokens.gc_service_token); reused until it nears expiry.
GC_SERVICE_TOKEN_LIFETIME_SECONDS = env_int("GC_SERVICE_TOKEN_LIFETIME_SECONDS", 600, minimum=120, maximum=3600)
JWT_MEETING_TOKEN_LIFETIME_SECONDS = env_int("JWT_MEETING_TOKEN_LIFETIME_SECONDS", 300, minimum=30, maximum=3600)
# The organization named in meeting and guest tokens (meeting_org_id, home_org_id): one per deployment.
MEETING_ORG_ID = env_str("MEETING_ORG_ID", "darktower") or "darktower"
JWT_CLOCK_SKEW_SECONDS = env_int("JWT_CLOCK_SKEW_SECONDS", 30, minimum=0, maximum=300)
# The longest life (exp - iat) a token of each kind may claim to be verified: a token signed by a valid key but
# living longer is refused. At least the lifetime we issue that kind with (by default exactly it).
JWT_SERVICE_TOKEN_MAX_LIFETIME_SECONDS = env_int(
    "JWT_SERVICE_TOKEN_MAX_LIFETIME_SECONDS", JWT_SERVICE_TOKEN_LIFETIME_SECONDS,
    minimum=JWT_SERVICE_TOKEN_LIFETIME_SECONDS, maximum=86400,
)
JWT_USER_TOKEN_MAX_LIFETIME_SECONDS = env_int(
    "JWT_USER_TOKEN_MAX_LIFETIME_SECONDS", JWT_USER_TOKEN_LIFETIME_SECONDS,
    minimum=JWT_USER_TOKEN_LIFETIME_SECONDS, maximum=86400,
)
JWT_MEETING_TOKEN_MAX_LIFETIME_SECONDS = env_int(
    "JWT_MEETING_TOKEN_MAX_LIFETIME_SECONDS", JWT_MEETING_TOKEN_LIFETIME_SECONDS,
    minimum=JWT_MEETING_TOKEN_LIFETIME_SECONDS, maximum=3600,
)
# Meeting tokens of guests (role "guest"); guests get the meeting lifetime today.
JWT_GUEST_TOKEN_MAX_LIFETIME_SECONDS = env_int(
    "JWT_GUEST_TOKEN_MAX_LIFETIME_SECONDS", JWT_MEETING_TOKEN_LIFETIME_SECONDS,
    minimum=JWT_MEETING_TOKEN_LIFETIME_SECONDS, maximum=3600,
)
# How long a process uses its cached signing keys before reading them again: the longest a revoked key
# (manage.py revoke_signing_key) keeps being accepted by a process other than the one that revoked it.
SIGNING_KEY_CACHE_SECONDS = env_int("SIGNING_KEY_CACHE_SECONDS", 30, minimum=1, maximum=3600)
JWT_MAX_TOKEN_BYTES = 8192
# A secret of its own: were it SECRET_KEY, rotating SECRET_KEY would make every stored private key unreadable. Only
# development falls back to SECRET_KEY; a deployment that ran on that fallback sets it to its SECRET_KEY's value.
SIGNING_KEY_ENCRYPTION_KEY = env_secret("SIGNING_KEY_ENCRYPTION_KEY") or ""
if not SIGNING_KEY_ENCRYPTION_KEY:
    if not DEBUG:
        raise ImproperlyConfigured(
            "SIGNING_KEY_ENCRYPTION_KEY is required when DEBUG is off (or SIGNING_KEY_ENCRYPTION_KEY_FILE); it "
            "encrypts the token signing keys at rest and must not change with SECRET_KEY."
        )
    SIGNING_KEY_ENCRYPTION_KEY = SECRET_KEY

# --- Sign-in with OpenID Connect (accounts/oidc.py) ---------------------------------------------

# Providers by short name (lower case, letters, digits, dashes), each configured by OIDC_<NAME>_* (NAME upper-cased,
# dashes as underscores): ISSUER (discovery at ISSUER/.well-known/openid-configuration), CLIENT_ID, CLIENT_SECRET
# (or CLIENT_SECRET_FILE), SCOPES (space-separated, "openid email profile" by default) and DISPLAY_NAME.
OIDC_PROVIDER_NAMES = env_list("OIDC_PROVIDERS", [])
OIDC_PROVIDERS: dict[str, dict[str, str]] = {}
for _name in OIDC_PROVIDER_NAMES:
    if not re.fullmatch(r"[a-z0-9][a-z0-9-]{0,49}", _name):
        raise ImproperlyConfigured(f"OIDC_PROVIDERS: {_name!r} is not a short lower-case name (a-z, 0-9, -)")
    _prefix = "OIDC_" + _name.upper().replace("-", "_")
    _provider = {
        "issuer": env_str(f"{_prefix}_ISSUER", "").rstrip("/"),
        "client_id": env_str(f"{_prefix}_CLIENT_ID", ""),
        "client_secret": env_secret(f"{_prefix}_CLIENT_SECRET") or "",
        "scopes": env_str(f"{_prefix}_SCOPES", "openid email profile"),
        "display_name": env_str(f"{_prefix}_DISPLAY_NAME", _name),
    }
    _missing = [key for key in ("issuer", "client_id", "client_secret") if not _provider[key]]
    if _missing:
        _names = ", ".join(f"{_prefix}_{key.upper()}" for key in _missing)
        raise ImproperlyConfigured(f"OIDC provider {_name!r} lacks {_names}")
    if "openid" not in _provider["scopes"].split():
        raise ImproperlyConfigured(f"{_prefix}_SCOPES must include openid")
    OIDC_PROVIDERS[_name] = _provider
# Keys that encrypt provider access and refresh tokens at rest, comma-separated: the first encrypts, every one
# decrypts, so a rotation puts the new key first and keeps the old ones until `manage.py oidc_tokens_reencrypt`
# has run. Required when a provider is configured and DEBUG is off; development falls back to SECRET_KEY.
OIDC_TOKEN_ENCRYPTION_KEYS = [key.strip() for key in (env_secret("OIDC_TOKEN_ENCRYPTION_KEYS") or "").split(",")
                              if key.strip()]
if not OIDC_TOKEN_ENCRYPTION_KEYS:
    if OIDC_PROVIDERS and not DEBUG:
        raise ImproperlyConfigured(
            "OIDC_TOKEN_ENCRYPTION_KEYS (or OIDC_TOKEN_ENCRYPTION_KEYS_FILE) is required when OIDC_PROVIDERS is set "
            "and DEBUG is off; it encrypts the providers' tokens at rest."
        )
    OIDC_TOKEN_ENCRYPTION_KEYS = [SECRET_KEY]
# Allowed clock difference with a provider when checking an ID token's iat and exp.
OIDC_CLOCK_SKEW_SECONDS = env_int("OIDC_CLOCK_SKEW_SECONDS", 60, minimum=0, maximum=600)
# Timeout of each request to a provider (discovery, keys, token endpoint, userinfo).
OIDC_HTTP_TIMEOUT_SECONDS = env_float("OIDC_HTTP_TIMEOUT_SECONDS", 10.0, minimum=0.5, maximum=60.0)

# --- Controllers: heartbeats, health, placement -------------------------------------------------

GRPC_BIND = env_str("GRPC_BIND", "127.0.0.1:50051")
# TLS for the gRPC server (PEM files): certificate chain and key; with a client CA, every client must present a
# certificate it signed (mutual TLS). With DEBUG off, a plaintext bind on a non-loopback address refuses to start
# unless GRPC_ALLOW_PLAINTEXT says a TLS-terminating proxy or a private link carries the traffic.
GRPC_TLS_CERT_FILE = env_str("GRPC_TLS_CERT_FILE", "")
GRPC_TLS_KEY_FILE = env_str("GRPC_TLS_KEY_FILE", "")
GRPC_TLS_CLIENT_CA_FILE = env_str("GRPC_TLS_CLIENT_CA_FILE", "")
GRPC_ALLOW_PLAINTEXT = env_bool("GRPC_ALLOW_PLAINTEXT", False)
GRPC_WORKERS = env_int("GRPC_WORKERS", 8, minimum=1, maximum=256)
# Calls waiting for the database (registrations and beats that change health waiting for their method's writer, calls
# waiting for or running in a worker thread) beyond which the next one is refused at once, RESOURCE_EXHAUSTED with a
# retry-after, instead of queueing past its deadline. A waiting call costs memory, not a thread: sized for a fleet of
# 20,000 members restarting against one process (README, Operations > Sizing).
GRPC_MAX_QUEUED_CALLS = env_int("GRPC_MAX_QUEUED_CALLS", 20_000, minimum=1)
GRPC_PROCESSES = env_int("GRPC_PROCESSES", 1, minimum=1, maximum=256)
GRPC_MAX_RECEIVE_MESSAGE_BYTES = env_int("GRPC_MAX_RECEIVE_MESSAGE_BYTES", 64 * 1024, minimum=1024)
GRPC_SHUTDOWN_GRACE_SECONDS = env_float("GRPC_SHUTDOWN_GRACE_SECONDS", 10.0, minimum=0)
GRPC_GC_FULL_SECONDS = env_float("GRPC_GC_FULL_SECONDS", 3600.0, minimum=0)
# A StreamHeartbeats stream with no beat for this long is ended (DEADLINE_EXCEEDED; the MC opens a new one): an
# idle stream must not keep a token alive past its revocation. Twice the stale threshold by default.
GRPC_STREAM_IDLE_TIMEOUT_SECONDS = env_float("GRPC_STREAM_IDLE_TIMEOUT_SECONDS", 60.0, minimum=0.001)
# gRPC rate limits (controllers.grpc.ratelimit): registrations in Redis per RATE_LIMIT_WINDOW_SECONDS, per caller
# and member and per caller; heartbeats in process, a token bucket per caller and member.
GRPC_RATE_LIMIT_REGISTER_PER_MEMBER = env_int("GRPC_RATE_LIMIT_REGISTER_PER_MEMBER", 10, minimum=1)
# Per caller: a whole fleet may share one credential and restart within one window (a deploy, a region's outage), so
# at least the number of members sharing it, with room for the crash-looping few.
GRPC_RATE_LIMIT_REGISTER_PER_CLIENT = env_int("GRPC_RATE_LIMIT_REGISTER_PER_CLIENT", 30_000, minimum=1)
GRPC_HEARTBEAT_RATE_FACTOR = env_float("GRPC_HEARTBEAT_RATE_FACTOR", 3.0, minimum=1.0)
GRPC_HEARTBEAT_BURST = env_int("GRPC_HEARTBEAT_BURST", 10, minimum=1)
FAST_HEARTBEAT_INTERVAL_MS = env_int("FAST_HEARTBEAT_INTERVAL_MS", 10_000, minimum=1000)
COMPREHENSIVE_HEARTBEAT_INTERVAL_MS = env_int("COMPREHENSIVE_HEARTBEAT_INTERVAL_MS", 30_000, minimum=1000)
MH_LOAD_REPORT_INTERVAL_MS = env_int("MH_LOAD_REPORT_INTERVAL_MS", 10_000, minimum=1000)
# Heartbeats are coalesced in memory and written in one set-based UPDATE this often.
HEARTBEAT_FLUSH_INTERVAL_MS = env_int("HEARTBEAT_FLUSH_INTERVAL_MS", 200, minimum=10, maximum=5000)
HEARTBEAT_STALE_THRESHOLD_SECONDS = env_int("HEARTBEAT_STALE_THRESHOLD_SECONDS", 30, minimum=1)
PENDING_STARTUP_GRACE_SECONDS = env_int("PENDING_STARTUP_GRACE_SECONDS", 60, minimum=1)
UNHEALTHY_HOLD_DOWN_SECONDS = env_int("UNHEALTHY_HOLD_DOWN_SECONDS", 60, minimum=0)
UNHEALTHY_RECOVERY_HEARTBEATS = env_int("UNHEALTHY_RECOVERY_HEARTBEATS", 2, minimum=1)
STALE_SWEEP_INTERVAL_SECONDS = env_int("STALE_SWEEP_INTERVAL_SECONDS", 5, minimum=1)
DISRUPTION_MAX_STALE_SHARE = env_float("DISRUPTION_MAX_STALE_SHARE", 0.55, minimum=0.0, maximum=1.0)
DISRUPTION_MIN_REGION_SIZE = env_int("DISRUPTION_MIN_REGION_SIZE", 10, minimum=1)
DRAIN_DEFAULT_DEADLINE_SECONDS = env_int("DRAIN_DEFAULT_DEADLINE_SECONDS", 3600, minimum=1)
DEFAULT_REGION = env_str("DEFAULT_REGION", "us-east-1")
PLACEMENT_CANDIDATES = env_int("PLACEMENT_CANDIDATES", 5, minimum=1, maximum=100)
PLACEMENT_MAX_ASSIGNMENTS_PER_MINUTE = env_int("PLACEMENT_MAX_ASSIGNMENTS_PER_MINUTE", 0, minimum=0)
PLACEMENT_LARGE_MEETING_THRESHOLD = env_int("PLACEMENT_LARGE_MEETING_THRESHOLD", 100, minimum=1)
# Whether a new assignment is first offered to the MC (AssignMeetingWithMh, as Dark Tower's MCs require: they
# refuse clients of a meeting they were not told of). Off only for a fleet whose MCs do not serve that call.
MC_ASSIGN_CALLS = env_bool("MC_ASSIGN_CALLS", True)
# The GC's AssignMeetingWithMh call to an MC (controllers.mc_client): a join waits for it, so it is short.
MC_ASSIGN_TIMEOUT_SECONDS = env_float("MC_ASSIGN_TIMEOUT_SECONDS", 2.0, minimum=0.05, maximum=30.0)
MC_CHANNELS_MAX = env_int("MC_CHANNELS_MAX", 512, minimum=1)
MC_TLS_CA_FILE = env_str("MC_TLS_CA_FILE", None) or None

# --- Retention ---------------------------------------------------------------------------------

RETENTION_MEETINGS_DAYS = env_int("RETENTION_MEETINGS_DAYS", 90, minimum=1)
RETENTION_RECORDINGS_DAYS = env_int("RETENTION_RECORDINGS_DAYS", 365, minimum=1)
RETENTION_EXPIRED_API_KEYS_DAYS = env_int("RETENTION_EXPIRED_API_KEYS_DAYS", 30, minimum=0)
RETENTION_OUTBOX_DAYS = env_int("RETENTION_OUTBOX_DAYS", 30, minimum=1)
RETENTION_AUDIT_MONTHS = env_int("RETENTION_AUDIT_MONTHS", 12, minimum=1)
RETENTION_ENDED_ASSIGNMENTS_DAYS = env_int("RETENTION_ENDED_ASSIGNMENTS_DAYS", 7, minimum=1)
RETENTION_HEALTH_TRANSITIONS_DAYS = env_int("RETENTION_HEALTH_TRANSITIONS_DAYS", 30, minimum=1)
AUDIT_PARTITIONS_AHEAD_MONTHS = env_int("AUDIT_PARTITIONS_AHEAD_MONTHS", 3, minimum=1, maximum=36)
IDEMPOTENCY_KEY_TTL_SECONDS = env_int("IDEMPOTENCY_KEY_TTL_SECONDS", 86400, minimum=60)
OUTBOX_MAX_ATTEMPTS = env_int("OUTBOX_MAX_ATTEMPTS", 10, minimum=1)
OUTBOX_BATCH_SIZE = env_int("OUTBOX_BATCH_SIZE", 100, minimum=1, maximum=10_000)

# --- Dev conveniences ---------------------------------------------------------------------------

DEV_SUPERUSER_EMAIL = env_str("DEV_SUPERUSER_EMAIL", "admin@darktower.local")
DEV_SUPERUSER_PASSWORD = env_secret("DEV_SUPERUSER_PASSWORD")
# manage.py simulate_fleet: where it asks for its service token, and the credential it uses (with DEBUG and none
# given, it creates a throwaway credential of its own).
SIMULATE_API_URL = env_str("SIMULATE_API_URL", "http://127.0.0.1:8000")
SIMULATE_CLIENT_ID = env_str("SIMULATE_CLIENT_ID", None) or None
SIMULATE_CLIENT_SECRET = env_secret("SIMULATE_CLIENT_SECRET")

# --- HTTP / DRF -------------------------------------------------------------------------------

DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("HTTP_MAX_BODY_BYTES", 256 * 1024, minimum=1024)

REST_FRAMEWORK = {
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_FILTER_BACKENDS": ["django_filters.rest_framework.DjangoFilterBackend"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.LimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_AUTHENTICATION_CLASSES": [],
    "DEFAULT_PERMISSION_CLASSES": [],
    "UNAUTHENTICATED_USER": None,
    "EXCEPTION_HANDLER": "darktower.api.errors.exception_handler",
}
# Who may call the API's views (darktower.api.views.ApiView): classes of the accounts app, by dotted path, so
# that darktower/ imports no app. Views outside ApiView authenticate nobody (the default above).
API_AUTHENTICATION_CLASSES = [
    "accounts.api.authentication.BearerTokenAuthentication",
    "accounts.api.authentication.ApiKeyAuthentication",
]
# The model of the idempotency_keys table that darktower.api.idempotency stores POST responses in.
IDEMPOTENCY_KEY_MODEL = "audit.IdempotencyKey"

# --- API: rate limits (Redis key ratelimit:{endpoint}:{identifier}:{window}) ---------------------------

RATE_LIMIT_WINDOW_SECONDS = env_int("RATE_LIMIT_WINDOW_SECONDS", 60, minimum=1, maximum=86400)
# Failed logins per window (successes count nowhere): per account and address, per account (from every address:
# an attacker needs six addresses to lock an account out, and gets 30 guesses a window), per address.
RATE_LIMIT_LOGIN_PER_EMAIL_AND_IP = env_int("RATE_LIMIT_LOGIN_PER_EMAIL_AND_IP", 5, minimum=1)
RATE_LIMIT_LOGIN_PER_EMAIL = env_int("RATE_LIMIT_LOGIN_PER_EMAIL", 30, minimum=1)
RATE_LIMIT_LOGIN_PER_IP = env_int("RATE_LIMIT_LOGIN_PER_IP", 20, minimum=1)
RATE_LIMIT_TOKEN_PER_CLIENT = env_int("RATE_LIMIT_TOKEN_PER_CLIENT", 30, minimum=1)
RATE_LIMIT_TOKEN_PER_IP = env_int("RATE_LIMIT_TOKEN_PER_IP", 60, minimum=1)
RATE_LIMIT_MEETING_CREATE_PER_PRINCIPAL = env_int("RATE_LIMIT_MEETING_CREATE_PER_PRINCIPAL", 30, minimum=1)
RATE_LIMIT_MEETING_UPDATE_PER_PRINCIPAL = env_int("RATE_LIMIT_MEETING_UPDATE_PER_PRINCIPAL", 60, minimum=1)
RATE_LIMIT_API_KEY_CREATE_PER_PRINCIPAL = env_int("RATE_LIMIT_API_KEY_CREATE_PER_PRINCIPAL", 10, minimum=1)
# API keys a user may hold at once (active: not revoked, not expired), whoever creates them (REST or admin).
API_KEYS_MAX_ACTIVE_PER_USER = env_int("API_KEYS_MAX_ACTIVE_PER_USER", 20, minimum=1, maximum=1000)
RATE_LIMIT_JOIN_PER_PRINCIPAL = env_int("RATE_LIMIT_JOIN_PER_PRINCIPAL", 60, minimum=1)
RATE_LIMIT_JOIN_PER_IP = env_int("RATE_LIMIT_JOIN_PER_IP", 120, minimum=1)
# Recording writes (start, update, share, unshare, rotate) per user or API key per window, one budget for all.
RATE_LIMIT_RECORDING_WRITE_PER_PRINCIPAL = env_int("RATE_LIMIT_RECORDING_WRITE_PER_PRINCIPAL", 60, minimum=1)
# Personal data: exports (GET /api/v1/me/export, a whole document each) and erasure attempts (DELETE /api/v1/me,
# which may check a password) per user per window.
RATE_LIMIT_EXPORT_PER_PRINCIPAL = env_int("RATE_LIMIT_EXPORT_PER_PRINCIPAL", 2, minimum=1)
RATE_LIMIT_ERASE_PER_PRINCIPAL = env_int("RATE_LIMIT_ERASE_PER_PRINCIPAL", 5, minimum=1)
# DELETE /api/v1/me without the password in its body needs a bearer token issued at most this long ago.
ERASURE_REAUTHENTICATION_SECONDS = env_int("ERASURE_REAUTHENTICATION_SECONDS", 300, minimum=0, maximum=86400)
# Retry-After of a 503 no_controller_available.
NO_CAPACITY_RETRY_AFTER_SECONDS = env_int("NO_CAPACITY_RETRY_AFTER_SECONDS", 5, minimum=1, maximum=3600)
# Object-storage bucket new recordings are written to (recordings.storage_bucket).
RECORDINGS_STORAGE_BUCKET = env_str("RECORDINGS_STORAGE_BUCKET", "darktower-recordings")
# Lifetime of a recording's share link: the default when the share asks for none, and the most it may ask for.
RECORDING_SHARE_MAX_SECONDS = env_int("RECORDING_SHARE_MAX_SECONDS", 30 * 86400, minimum=60, maximum=365 * 86400)
RECORDING_SHARE_DEFAULT_SECONDS = env_int(
    "RECORDING_SHARE_DEFAULT_SECONDS", min(7 * 86400, RECORDING_SHARE_MAX_SECONDS), minimum=60,
    maximum=RECORDING_SHARE_MAX_SECONDS,
)

SPECTACULAR_SETTINGS = {
    "TITLE": "Dark Tower Global Controller API",
    "DESCRIPTION": "Meetings, the join flow, recordings, API keys and the controller fleet.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI from drf-spectacular-sidecar's static files, not from a public CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several models have a `status`; name each choice set after its model instead of a hash.
    "ENUM_NAME_OVERRIDES": {
        "MeetingStatusEnum": "meetings.models.MeetingStatus",
        "RecordingStatusEnum": "meetings.models.RecordingStatus",
        "HealthStatusEnum": "controllers.models.HealthStatus",
    },
    # The service-token endpoint and the JWKS are plain Django views; this hook documents them.
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "accounts.api.oauth.openapi_add_plain_views",
    ],
}

# --- i18n / time ------------------------------------------------------------------------------

LANGUAGE_CODE = "en-us"
# One time format in the admin, 24-hour with seconds (darktower/formats), instead of the locale's "5:04 p.m.".
FORMAT_MODULE_PATH = ["darktower.formats"]
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = DATA_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# --- Security ---------------------------------------------------------------------------------

SECURE_CONTENT_TYPE_NOSNIFF = True
X_FRAME_OPTIONS = "DENY"
SESSION_COOKIE_HTTPONLY = True
# Reverse proxies (CIDRs) whose X-Forwarded-For is believed: only when the peer is one of them, and then the
# right-most address that is not one of them is the client (darktower/client_address.py). Empty: no proxy.
TRUSTED_PROXIES = env_list("TRUSTED_PROXIES", [])
try:
    TRUSTED_PROXIES_PARSED = tuple(ipaddress.ip_network(net, strict=False) for net in TRUSTED_PROXIES)
except ValueError as exc:
    raise ImproperlyConfigured(f"TRUSTED_PROXIES: {exc}") from None
# X-Forwarded-Proto says whether the client spoke HTTPS to the proxy: believed only behind a trusted proxy (which
# must overwrite the header), never from clients that reach this process directly.
_TRUST_X_FORWARDED_PROTO = env_bool("TRUST_X_FORWARDED_PROTO", bool(TRUSTED_PROXIES))
if _TRUST_X_FORWARDED_PROTO and not TRUSTED_PROXIES:
    raise ImproperlyConfigured("TRUST_X_FORWARDED_PROTO needs TRUSTED_PROXIES: only a trusted proxy's header counts.")
SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https") if _TRUST_X_FORWARDED_PROTO else None
# Production answers HTTPS only: plain HTTP is redirected, and browsers are told (HSTS) to use nothing else for a
# year, this host's subdomains included. Development (DEBUG on, make run) serves plain HTTP and sends no HSTS.
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", not DEBUG)
# Probes and scrapes answer plain HTTP too: load balancers, orchestrators and Prometheus reach the process
# directly, without TLS (/metrics keeps its own allow-list); none of them carries a cookie or a credential.
SECURE_REDIRECT_EXEMPT = [r"^health$", r"^ready$", r"^metrics$"]
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 0 if DEBUG else 31_536_000, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", not DEBUG)
# The preload token is consent to browsers' built-in HSTS lists; it takes effect only once the domain is submitted.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", not DEBUG)
# Admin sessions: 8 hours, not Django's two weeks.
SESSION_COOKIE_AGE = env_int("SESSION_COOKIE_AGE", 8 * 3600, minimum=60, maximum=14 * 86400)
SESSION_COOKIE_SECURE = env_bool("SESSION_COOKIE_SECURE", not DEBUG)
CSRF_COOKIE_SECURE = env_bool("CSRF_COOKIE_SECURE", not DEBUG)

# --- Metrics (darktower/metrics.py) ------------------------------------------------------------

# Set for several processes (gunicorn workers, grpcserver processes): prometheus-client reads it from the
# environment itself; darktower.metrics aggregates that directory's files at scrape time.
PROMETHEUS_MULTIPROC_DIR = env_str("PROMETHEUS_MULTIPROC_DIR", None) or None
# Who may scrape GET /metrics (it shows the fleet's layout): client addresses (behind a trusted proxy, the client's
# from X-Forwarded-For) in these networks; anyone else gets a 404.
METRICS_ALLOWED_NETWORKS = env_list("METRICS_ALLOWED_NETWORKS", ["127.0.0.0/8", "::1/128"])
try:
    METRICS_ALLOWED_NETWORKS_PARSED = tuple(ipaddress.ip_network(net, strict=False) for net in METRICS_ALLOWED_NETWORKS)
except ValueError as exc:
    raise ImproperlyConfigured(f"METRICS_ALLOWED_NETWORKS: {exc}") from None

# --- Logging ----------------------------------------------------------------------------------

LOG_LEVEL = env_str("LOG_LEVEL", "INFO")
# Level of the routine lines of every periodic job (Celery's "task received" / "succeeded", beat's "sending due
# task": several a second in total), which would bury the events. INFO (or DEBUG) shows them again.
LOG_ROUTINE_LEVEL = env_str("LOG_ROUTINE_LEVEL", "WARNING")
ROUTINE_LOGGERS = ("celery.worker.strategy", "celery.app.trace", "celery.beat")
# One line per HTTP request (method, path, status, duration; darktower/access_log.py). On in development; in
# production the proxy in front usually keeps the access log.
ACCESS_LOG = env_bool("ACCESS_LOG", DEBUG)
if ACCESS_LOG:
    MIDDLEWARE.insert(1, "darktower.access_log.AccessLogMiddleware")
LOG_FORMAT = env_str("LOG_FORMAT", "text" if DEBUG else "json")
if LOG_FORMAT not in {"text", "json"}:
    raise ImproperlyConfigured(f"LOG_FORMAT must be 'text' or 'json', got {LOG_FORMAT!r}")

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "text": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {
            "()": "pythonjsonlogger.json.JsonFormatter",
            "fmt": "%(asctime)s %(levelname)s %(name)s %(message)s",
            "rename_fields": {"asctime": "ts", "levelname": "level", "name": "logger"},
        },
    },
    # Emails, bearer tokens, JWTs and our key formats are blanked out of every message (darktower/log_redaction.py).
    # A 503 (no capacity, retry) is an expected answer: django.request logs it at WARNING, like a 4xx.
    "filters": {
        "redact": {"()": "darktower.log_redaction.RedactingFilter"},
        "expected_answers": {"()": "darktower.api.request_log.ExpectedAnswerFilter"},
    },
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["redact"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        "django.db.backends": {"level": "WARNING"},
        "django.server": {"level": "WARNING"},
        "django.request": {"filters": ["expected_answers"]},
        # Django's own console handler on "django" would print each of its records a second time, unformatted
        # and unredacted: its records go to the root handler only.
        "django": {"handlers": []},
        **{name: {"level": LOG_ROUTINE_LEVEL} for name in ROUTINE_LOGGERS},
        # A worker's start-up lines, "ready" among them, print at any LOG_LEVEL: `make run` and supervisors wait
        # for that line, and it comes once per start.
        "celery.apps.worker": {"level": "INFO"},
    },
}
