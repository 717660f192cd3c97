"""What every benchmark shares: a scratch database, timing, a printed table and a JSON result.

Benchmarks never touch the development database. Each one creates its own database (`bench_<name>`) on the
same PostgreSQL server the settings point at (the embedded one when DATABASE_URL is unset), as a copy of a
template database migrated with `manage.py migrate` in a subprocess (rebuilt whenever a migration file or the
month changes; `benchtpl_<fingerprint>`, the one database a bench leaves behind), and drops it afterwards, also
when the run fails. Results go to bench/results/<name>.json; bench/report.py renders them into RESULTS.md.

Run a bench from the repository root: `python -m bench.<name> [--quick]`. `--quick` is the tiny scale the smoke
tests (tests/bench_smoke/) use so that no bench can rot; its figures mean nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import os
import platform
import shlex
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psutil

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "bench" / "results"
PYTHON = sys.executable


def bootstrap() -> None:
    """Make `django.conf.settings` importable from a bench script (development settings, like `make`)."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "darktower.settings")
    os.environ.setdefault("DEBUG", "1")
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


# --- command line ------------------------------------------------------------------------------------------


def argument_parser(name: str, description: str) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=f"python -m bench.{name}", description=description)
    parser.add_argument("--quick", action="store_true", help="tiny scale for the smoke tests; figures mean nothing")
    parser.add_argument("--results-dir", type=Path, default=RESULTS_DIR, help="where <name>.json goes")
    parser.add_argument(
        "--db-prefix", default="bench", help="scratch databases are named <prefix>_<name>_... (default bench)"
    )
    return parser


def command_line(name: str, argv: Sequence[str] | None = None) -> str:
    """The command that reproduces this run, for RESULTS.md."""
    argv = sys.argv[1:] if argv is None else argv
    return shlex.join(["python", "-m", f"bench.{name}", *argv])


# --- the PostgreSQL server and scratch databases -------------------------------------------------------------


@dataclass(frozen=True)
class Server:
    """The PostgreSQL server from settings.DATABASES['default'] (TCP host or unix socket directory)."""

    host: str
    port: str
    user: str
    password: str

    @classmethod
    def from_settings(cls) -> Server:
        bootstrap()
        from django.conf import settings

        db = settings.DATABASES["default"]
        return cls(
            host=str(db.get("HOST") or ""), port=str(db.get("PORT") or ""),
            user=str(db.get("USER") or ""), password=str(db.get("PASSWORD") or ""),
        )

    def connect_kwargs(self, dbname: str) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"dbname": dbname, "application_name": "darktower-bench"}
        for key in ("host", "port", "user", "password"):
            if getattr(self, key):
                kwargs[key] = getattr(self, key)
        return kwargs

    def connect(self, dbname: str, *, autocommit: bool = True) -> Any:
        import psycopg

        return psycopg.connect(autocommit=autocommit, **self.connect_kwargs(dbname))

    def url(self, dbname: str) -> str:
        """A DATABASE_URL for `dbname` that darktower/settings.py understands (?host= for a socket directory)."""
        credentials = quote(self.user, safe="")
        if self.password:
            credentials += ":" + quote(self.password, safe="")
        if self.host.startswith("/"):
            query = f"?host={quote(self.host, safe='')}" + (f"&port={self.port}" if self.port else "")
            return f"postgresql://{credentials}@/{dbname}{query}"
        netloc = self.host + (f":{self.port}" if self.port else "")
        return f"postgresql://{credentials}@{netloc}/{dbname}"


@dataclass(frozen=True)
class Scratch:
    name: str
    server: Server

    @property
    def url(self) -> str:
        return self.server.url(self.name)

    def connect(self, *, autocommit: bool = True) -> Any:
        return self.server.connect(self.name, autocommit=autocommit)

    def env(self, **extra: str) -> dict[str, str]:
        """Environment for a subprocess (manage.py ...) that works on this database."""
        # MC_ASSIGN_CALLS off: the benches' MCs are rows without a server behind their endpoints.
        return {**os.environ, "DEBUG": "1", "DATABASE_URL": self.url, "PYTHONUNBUFFERED": "1",
                "MC_ASSIGN_CALLS": "0", **extra}


def _drop(server: Server, name: str) -> None:
    with server.connect("postgres") as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


TEMPLATE_PREFIX = "benchtpl_"


def _template_fingerprint() -> str:
    """Changes with any migration file, and with the month: migrations create the audit partitions around
    the current month, so a template from last month would lack this month's."""
    digest = hashlib.sha256(datetime.now(UTC).strftime("%Y-%m").encode())
    for path in sorted(ROOT.glob("*/migrations/*.py")):
        digest.update(path.relative_to(ROOT).as_posix().encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


def _create_migrated(server: Server, name: str) -> None:
    """CREATE DATABASE `name` as a copy of a migrated template, building the template first if the migrations
    changed. The template (`benchtpl_<fingerprint>`, kept between runs) saves each bench the ~15 s of
    `manage.py migrate`; an advisory lock makes concurrent runs (the smoke tests of several checkouts) build it
    once, and no session ever connects to it but the build, so copying it never finds it in use."""
    template = TEMPLATE_PREFIX + _template_fingerprint()
    with server.connect("postgres") as admin:
        admin.execute("SELECT pg_advisory_lock(hashtext('darktower-bench-template'))")
        try:
            if admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [template]).fetchone() is None:
                building = Scratch(name=f"{template}_building", server=server)
                _drop(server, building.name)
                admin.execute(f'CREATE DATABASE "{building.name}"')
                try:
                    migrate_database(building)
                except BaseException:
                    _drop(server, building.name)
                    raise
                admin.execute(f'ALTER DATABASE "{building.name}" RENAME TO "{template}"')
                stale = admin.execute(
                    "SELECT datname FROM pg_database WHERE datname LIKE %s AND datname <> %s",
                    [TEMPLATE_PREFIX.replace("_", "\\_") + "%", template],
                ).fetchall()
                for (old,) in stale:
                    _drop(server, old)
            admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        finally:
            admin.execute("SELECT pg_advisory_unlock(hashtext('darktower-bench-template'))")


@contextlib.contextmanager
def scratch_database(name: str, *, prefix: str = "bench", migrate: bool = True) -> Iterator[Scratch]:
    """A fresh database `<prefix>_<name>` (migrated unless migrate=False), dropped on the way out."""
    server = Server.from_settings()
    scratch = Scratch(name=f"{prefix}_{name}", server=server)
    _drop(server, scratch.name)  # left over by a run that was killed
    if migrate:
        _create_migrated(server, scratch.name)
    else:
        with server.connect("postgres") as admin:
            admin.execute(f'CREATE DATABASE "{scratch.name}"')
    try:
        yield scratch
    finally:
        with contextlib.suppress(Exception):
            from django.db import connections

            connections.close_all()
        _drop(server, scratch.name)


def migrate_database(scratch: Scratch) -> None:
    completed = subprocess.run(
        [PYTHON, "manage.py", "migrate", "--noinput"], cwd=ROOT, env=scratch.env(),
        capture_output=True, text=True, check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"migrate of {scratch.name} failed:\n{completed.stdout}\n{completed.stderr}")


def use_django(scratch: Scratch) -> None:
    """Point this process's Django at the scratch database and set it up (for benches that call services)."""
    bootstrap()
    import django
    from django.conf import settings
    from django.db import connections

    connections.close_all()
    settings.DATABASES["default"]["NAME"] = scratch.name
    # No connection survives between calls in a bench loop by accident; each service opens what it needs.
    settings.DATABASES["default"]["CONN_MAX_AGE"] = 0
    django.setup()
    connections["default"].settings_dict["NAME"] = scratch.name


def server_version(scratch: Scratch) -> str:
    with scratch.connect() as conn:
        return str(conn.execute("SHOW server_version").fetchone()[0])


# --- timing -------------------------------------------------------------------------------------------------


class Timer:
    """`with Timer() as t: ...` then t.seconds / t.ms."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start

    @property
    def ms(self) -> float:
        return self.seconds * 1000


def free_port() -> int:
    """A loopback port free right now (for servers that must be told their port, e.g. several sharing one)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process `pid` and every process it started: those still running, and those that
    ended, counted in the times of the parent that waited for them (a PostgreSQL backend that exits between two
    readings would otherwise take its CPU out of the sum)."""
    total = 0.0
    with contextlib.suppress(psutil.NoSuchProcess):
        parent = psutil.Process(pid)
        for member in [parent, *parent.children(recursive=True)]:
            with contextlib.suppress(psutil.NoSuchProcess):
                times = member.cpu_times()
                total += times.user + times.system + times.children_user + times.children_system
    return total


def percentile(values: Sequence[float], p: float) -> float:
    """The p-th percentile (0..100), nearest-rank; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[rank - 1]


def median(values: Sequence[float]) -> float:
    return percentile(values, 50)


# --- output -------------------------------------------------------------------------------------------------


def fmt(value: Any) -> str:
    if isinstance(value, float):
        if math.isnan(value):
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.2f}"
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    return str(value)


def load_note(before: float, after: float) -> str:
    """The machine's 1-minute load average around a run, and what it counts."""
    cpus = os.cpu_count() or 1
    return (f"Machine load average (1 min) before / after: {before:.2f} / {after:.2f} on {cpus} CPUs. It counts this "
            "bench's own processes (client, servers, PostgreSQL) and, before the run, the previous bench's load "
            "still decaying (one-minute time constant); other work on the machine shifts these figures by 10-30 %.")


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[fmt(value) for value in row] for row in rows]
    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


@dataclass
class Result:
    """One bench's output: a title, a table, notes, and whatever raw data explains the table."""

    name: str
    title: str
    headers: list[str]
    rows: list[list[Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)
    quick: bool = False

    def add(self, *row: Any) -> None:
        self.rows.append(list(row))

    def table(self) -> str:
        return markdown_table(self.headers, self.rows)

    def print(self) -> None:
        print(f"\n## {self.title}\n")
        print(self.table())
        for note in self.notes:
            print(f"- {note}")
        sys.stdout.flush()

    def write(self, results_dir: Path, *, command: str, postgres: str | None = None) -> Path:
        results_dir.mkdir(parents=True, exist_ok=True)
        path = results_dir / f"{self.name}.json"
        payload = {
            "name": self.name,
            "title": self.title,
            "command": command,
            "quick": self.quick,
            "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "machine": {
                "cpus": os.cpu_count(),
                "python": platform.python_version(),
                "platform": platform.platform(),
                "postgres": postgres,
            },
            "headers": self.headers,
            "rows": self.rows,
            "notes": self.notes,
            "data": self.data,
        }
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        return path


def finish(result: Result, args: argparse.Namespace, *, postgres: str | None = None) -> None:
    result.quick = bool(args.quick)
    result.print()
    path = result.write(args.results_dir, command=command_line(result.name), postgres=postgres)
    print(f"\nwrote {path}")
