"""Standing actors and shared fixtures. Each app's tests may add fixtures in their own conftest."""

from __future__ import annotations

import copy
import os
from importlib import import_module
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import pytest

from tests.factories import make_user

# Fixtures without autouse that tests of several apps use; autouse fixtures stay in the conftest of their folder.
pytest_plugins = ["tests.fixtures.admin", "tests.fixtures.jobs"]


def pytest_configure(config: pytest.Config) -> None:
    # The processes tests start (gunicorn, grpcserver, Celery workers) inherit this: like the tests themselves
    # (mc_assign_calls below), they place meetings without asking MCs that have no server behind them.
    os.environ.setdefault("MC_ASSIGN_CALLS", "0")
    _test_process_without_the_pool()
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        _redis_of_worker(int(worker.removeprefix("gw")))


def redis_url_of_worker(url: str, index: int) -> str:
    """`url` with a Redis database number of xdist worker `index` alone: the URL's own number (0 if none) plus
    index + 1, so that no worker shares a database with another or with a run without xdist."""
    if url.startswith("unix://"):  # redis-py reads a socket's database from ?db=
        path, _, query = url.partition("?")
        params = dict(parse_qsl(query))
        params["db"] = str(int(params.get("db", 0)) + index + 1)
        return f"{path}?{urlencode(params)}"
    parts = urlsplit(url)
    number = int(parts.path.strip("/") or 0) + index + 1
    return urlunsplit(parts._replace(path=f"/{number}"))


def _redis_of_worker(index: int) -> None:
    """pytest-django gives each xdist worker its own test database; this gives it its own Redis database (rate
    limits, the capacity cache, the event stream, Celery's queues), in this process and in every process its
    tests start (they read REDIS_URL from the environment)."""
    from django.conf import settings

    from darktower.settings import _celery_broker_url

    shared = settings.REDIS_URL
    own = redis_url_of_worker(shared, index)
    settings.REDIS_URL = os.environ["REDIS_URL"] = own
    # The broker and result backend follow REDIS_URL unless configured apart; then they are left as they are.
    for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
        if getattr(settings, name) == _celery_broker_url(shared):
            setattr(settings, name, _celery_broker_url(own))


# The default database's settings as a deployment has them (with its pool), before the test process drops the pool.
DEPLOYED_DATABASE: dict = {}


def _test_process_without_the_pool() -> None:
    # The processes tests start keep the pool, as deployed (tests/faults test it there). The test process itself
    # uses one connection per thread: fixtures re-point the connection's settings at an unreachable server (a pool
    # keeps the address it was built with), and concurrency tests hold more connections at once from one process
    # than a deployment's pool lends. Runs before any connection is made; the dict is the one connections use.
    from django.conf import settings

    database = settings.DATABASES["default"]
    DEPLOYED_DATABASE.update(copy.deepcopy(database))
    if database["OPTIONS"].pop("pool", None) is not None:
        database["CONN_MAX_AGE"] = settings.DB_CONN_MAX_AGE
        # Without the pool, Django checks a kept connection at each request's start, as deployed without one.
        database["CONN_HEALTH_CHECKS"] = True


@pytest.fixture(autouse=True)
def fast_passwords(settings):
    # Users get real passwords (factories, demo users); PBKDF2 at Django's default cost is slow by design.
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
def mc_assign_calls(request, settings):
    # The MCs that factories make have no server behind their endpoints: placement asks an MC only in tests
    # marked mc_calls, which run MCs that answer (tests/interop/original.py).
    settings.MC_ASSIGN_CALLS = request.node.get_closest_marker("mc_calls") is not None


@pytest.fixture(autouse=True)
def fresh_token_caches():
    # Signing keys live in the test's (rolled back) transaction; the per-process caches must not outlive it.
    from accounts.blacklist import blacklist_cache_clear
    from accounts.signing import signing_cache_clear
    from accounts.tokens import token_cache_clear

    for clear in (signing_cache_clear, token_cache_clear, blacklist_cache_clear):
        clear()
    yield
    for clear in (signing_cache_clear, token_cache_clear, blacklist_cache_clear):
        clear()


@pytest.fixture
def owner(db):
    return make_user(display_name="Owner")


@pytest.fixture
def outsider(db):
    return make_user(display_name="Outsider")


@pytest.fixture
def operator(db):
    """Staff in the "operator" group: the fleet's REST scopes follow the admin's permissions, not is_staff."""
    from django.apps import apps
    from django.contrib.auth.models import Group

    groups = import_module("accounts.migrations.0003_operator_groups")
    groups.operator_groups_sync(apps)  # idempotent; a transactional test elsewhere may have flushed the groups
    user = make_user(display_name="Operator", is_staff=True)
    user.groups.add(Group.objects.get(name=groups.OPERATOR))
    return user
