"""`manage.py grpcserver [--bind HOST:PORT] [--workers N] [--processes N] [--reuse-port]`: the internal gRPC API.

Our own command: django-grpc-framework's `grpcrunserver` does not run on Django >= 4.1. On SIGTERM or SIGINT
the server reports NOT_SERVING, refuses new calls, lets in-flight calls finish within
GRPC_SHUTDOWN_GRACE_SECONDS, writes the heartbeats still in memory, and exits 0.

With --processes N > 1 this process starts N servers as child processes sharing the port (SO_REUSEPORT, the
kernel spreads connections over them: one per core, since each answers heartbeats on one event loop), passes
SIGTERM and SIGINT on to them and exits 0 once all have stopped cleanly. If one of them dies, it stops the others
and exits 1, for the process manager to restart the set.

TLS: GRPC_TLS_CERT_FILE / GRPC_TLS_KEY_FILE (and GRPC_TLS_CLIENT_CA_FILE for mutual TLS). With DEBUG off it refuses
to start on a non-loopback address without TLS, unless GRPC_ALLOW_PLAINTEXT=1 (controllers.grpc.server).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError, CommandParser

from controllers.grpc.collector import ScheduledCollector
from controllers.grpc.server import ServerTls, build_server, plaintext_refusal, server_tls_from_settings

CHILD_STOP_TIMEOUT_SECONDS = 30.0


class Command(BaseCommand):
    help = "Serve the internal gRPC API (meeting controller and media handler registration, heartbeats)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--bind", default=settings.GRPC_BIND, help="HOST:PORT (default settings.GRPC_BIND)")
        parser.add_argument(
            "--workers", type=int, default=settings.GRPC_WORKERS,
            help="worker threads for the calls that need the database, each with its own connection "
            "(default settings.GRPC_WORKERS)",
        )
        parser.add_argument(
            "--processes", type=int, default=settings.GRPC_PROCESSES,
            help="server processes sharing the port, one per core in production (default settings.GRPC_PROCESSES)",
        )
        parser.add_argument(
            "--reuse-port", action="store_true",
            help="let several processes share the port (SO_REUSEPORT; spreads connections, not calls)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workers, processes = options["workers"], options["processes"]
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        if processes < 1:
            raise CommandError("--processes must be at least 1")
        try:
            tls = server_tls_from_settings()
        except ImproperlyConfigured as exc:
            raise CommandError(str(exc)) from None
        refused = plaintext_refusal(bind=options["bind"], tls=tls, debug=settings.DEBUG,
                                    allow_plaintext=settings.GRPC_ALLOW_PLAINTEXT)
        if refused:
            raise CommandError(refused)
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        if processes > 1:
            self._supervise(processes, options, stop)
        else:
            self._serve(options, stop, tls)

    def _serve(self, options: dict[str, Any], stop: threading.Event, tls: ServerTls | None) -> None:
        workers = options["workers"]
        try:
            grpc_server = build_server(bind=options["bind"], workers=workers, reuse_port=options["reuse_port"],
                                       tls=tls)
        except OSError as exc:
            raise CommandError(str(exc)) from None
        # Full collections of a process holding a fleet's heartbeat streams stall its event loop for hundreds of
        # milliseconds: collections are scheduled instead (controllers.grpc.collector).
        collector = ScheduledCollector(full_seconds=settings.GRPC_GC_FULL_SECONDS)
        collector.start()
        grpc_server.start()
        host = options["bind"].rpartition(":")[0]
        transport = "plaintext" if tls is None else "TLS" if tls.client_ca is None else "mutual TLS"
        self.stdout.write(
            f"gRPC server listening on {host}:{grpc_server.port} ({transport}) with {workers} workers "
            f"(pid {os.getpid()})"
        )
        self.stdout.flush()
        # A timed wait: the main thread must wake up to run the signal handler.
        while not stop.wait(1.0):
            pass
        self.stdout.write(f"stopping: finishing calls in flight (up to {settings.GRPC_SHUTDOWN_GRACE_SECONDS:g} s)")
        self.stdout.flush()
        grpc_server.stop()
        collector.stop()
        self.stdout.write("gRPC server stopped")

    def _supervise(self, processes: int, options: dict[str, Any], stop: threading.Event) -> None:
        bind = options["bind"]
        if bind.rpartition(":")[2] in ("", "0"):
            raise CommandError("--processes > 1 needs a fixed port in --bind: the processes share it")
        command = [sys.executable, "-m", "django", "grpcserver", "--processes", "1", "--reuse-port",
                   "--bind", bind, "--workers", str(options["workers"])]
        env = {**os.environ, "DJANGO_SETTINGS_MODULE": os.environ.get("DJANGO_SETTINGS_MODULE",
                                                                      "darktower.settings")}
        children = [subprocess.Popen(command, env=env) for _ in range(processes)]
        failed = False
        while not stop.wait(0.5):
            if any(child.poll() is not None for child in children):
                failed = True
                break
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + settings.GRPC_SHUTDOWN_GRACE_SECONDS + CHILD_STOP_TIMEOUT_SECONDS
        for child in children:
            try:
                child.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
        codes = [child.returncode for child in children]
        if failed or any(code != 0 for code in codes):
            raise CommandError(f"gRPC server processes exited with {codes}; stopped the set")
        self.stdout.write(f"all {processes} gRPC server processes stopped")
