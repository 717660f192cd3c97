"""`manage.py grpcserver [--bind HOST:PORT] [--workers N] [--reuse-port]`: the internal gRPC API.

Our own command: django-grpc-framework's `grpcrunserver` does not run on Django >= 4.1. On SIGTERM or SIGINT
the server reports NOT_SERVING, refuses new calls, lets in-flight calls finish within
GRPC_SHUTDOWN_GRACE_SECONDS, writes the heartbeats still in memory, and exits 0.
"""

from __future__ import annotations

import os
import signal
import threading
from types import FrameType
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from controllers.grpc.server import build_server


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
            "--reuse-port", action="store_true",
            help="let several processes share the port (SO_REUSEPORT; spreads connections, not calls)",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        workers = options["workers"]
        if workers < 1:
            raise CommandError("--workers must be at least 1")
        try:
            grpc_server = build_server(bind=options["bind"], workers=workers, reuse_port=options["reuse_port"])
        except OSError as exc:
            raise CommandError(str(exc)) from None
        stop = threading.Event()

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        grpc_server.start()
        host = options["bind"].rpartition(":")[0]
        self.stdout.write(
            f"gRPC server listening on {host}:{grpc_server.port} with {workers} workers (pid {os.getpid()})"
        )
        self.stdout.flush()
        # A timed wait: the main thread must wake up to run the signal handler.
        while not stop.wait(1.0):
            pass
        self.stdout.write(f"stopping: finishing calls in flight (up to {settings.GRPC_SHUTDOWN_GRACE_SECONDS:g} s)")
        self.stdout.flush()
        grpc_server.stop()
        self.stdout.write("gRPC server stopped")
