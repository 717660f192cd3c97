"""`manage.py check_db`: is the database reachable, which server is it, is every migration applied?

Exit codes: 0 reachable and migrated; 1 unreachable (one line on stderr, no traceback); 2 migrations
pending (0 with --allow-pending). Scripts and container health checks branch on them.
"""

from __future__ import annotations

from argparse import ArgumentParser
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import DEFAULT_DB_ALIAS, OperationalError, connections
from django.db.migrations.executor import MigrationExecutor

EXIT_UNREACHABLE = 1
EXIT_PENDING = 2


class Command(BaseCommand):
    help = "Connect to the database, print its server version and any pending migrations."

    # System checks and the migration check would touch the database before handle() can report it cleanly.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser: ArgumentParser) -> None:
        parser.add_argument("--database", default=DEFAULT_DB_ALIAS, help="Database alias (default: default).")
        parser.add_argument("--allow-pending", action="store_true", help="Exit 0 even when migrations are pending.")

    def handle(self, *args: Any, **options: Any) -> None:
        connection = connections[options["database"]]
        params = connection.settings_dict
        # One check needs one connection: a pool would retry in the background and log each refusal.
        params["OPTIONS"].pop("pool", None)
        host = params.get("HOST") or "localhost"
        # A HOST starting with "/" is a unix socket directory (the embedded server): no port to show.
        address = host if host.startswith("/") else f"{host}:{params.get('PORT') or 5432}"
        where = f"{params.get('NAME')!r} on {address}"
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT current_setting('server_version'), current_database()")
                server_version, database = cursor.fetchone()
            executor = MigrationExecutor(connection)
            plan = executor.migration_plan(executor.loader.graph.leaf_nodes())
        except OperationalError as exc:
            # psycopg's message spans lines ("connection failed: ...\n\tIs the server running ..."); one line.
            reason = " ".join(str(exc).split())
            raise CommandError(f"database {where} is unreachable: {reason}", returncode=EXIT_UNREACHABLE) from None

        self.stdout.write(f"server:     PostgreSQL {server_version}")
        self.stdout.write(f"database:   {database}")
        if not plan:
            self.stdout.write("migrations: all applied")
            return
        self.stdout.write(f"migrations: {len(plan)} pending")
        for migration, _backwards in plan:
            self.stdout.write(f"  {migration.app_label}.{migration.name}")
        if not options["allow_pending"]:
            raise CommandError(f"{len(plan)} migration(s) pending: run `manage.py migrate`", returncode=EXIT_PENDING)
