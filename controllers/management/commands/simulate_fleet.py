"""`manage.py simulate_fleet --controllers N [--handlers M] [--regions a,b] [--duration S] [--stale-share 0.05]
[--target HOST:PORT] [--api URL] [--streams] [--serve-assignments] [--tls] [--tls-ca-file PEM]
[--tls-client-cert PEM --tls-client-key PEM]`: a simulated fleet over real gRPC (tools.simulator, a development
tool: this command needs the repository's tools/ package), over TLS (mutual with a client certificate) when asked.

Credentials: --client-id / --client-secret, else SIMULATE_CLIENT_ID / SIMULATE_CLIENT_SECRET; with neither and
DEBUG on (`SIMULATE=N make run`), a throwaway credential is created for the run and revoked when it ends. The
token itself always comes from the token endpoint at --api, as a real MC's would.
"""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from accounts.services.service_tokens import service_credential_create, service_credential_revoke
from controllers.members import CONTROLLERS, HANDLERS
from controllers.models import MediaHandler, MeetingController
from controllers.services.ownership import members_transfer
from tools.simulator import Fleet, FleetConfig, SimulatorError, format_window


def _share(value: str) -> float:
    share = float(value)
    if not 0.0 <= share <= 1.0:
        raise ValueError(value)
    return share


class Command(BaseCommand):
    help = "Simulate meeting controllers and media handlers that register and send heartbeats over gRPC."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--controllers", type=int, default=10, help="meeting controllers (default 10)")
        parser.add_argument("--handlers", type=int, default=0, help="media handlers (default 0)")
        parser.add_argument("--regions", default=settings.DEFAULT_REGION, help="comma-separated regions")
        parser.add_argument("--duration", type=float, default=None, help="seconds to run (default: until Ctrl-C)")
        parser.add_argument("--stale-share", type=_share, default=0.05, help="share that goes silent (0.05)")
        parser.add_argument("--draining-share", type=_share, default=0.01, help="share that reports DRAINING (0.01)")
        parser.add_argument("--target", default=settings.GRPC_BIND, help="gRPC server (default settings.GRPC_BIND)")
        parser.add_argument("--api", default=settings.SIMULATE_API_URL, help="base URL of the token endpoint")
        parser.add_argument("--client-id", default=settings.SIMULATE_CLIENT_ID)
        parser.add_argument("--client-secret", default=settings.SIMULATE_CLIENT_SECRET,
                            help="prefer SIMULATE_CLIENT_SECRET: a command line is visible to other users")
        parser.add_argument("--max-in-flight", type=int, default=256, help="gRPC calls outstanding at most")
        parser.add_argument("--channels", type=int, default=4, help="gRPC connections (default 4)")
        parser.add_argument("--report-interval", type=float, default=10.0, help="seconds between summaries")
        parser.add_argument("--id-prefix", default="sim", help="member ids are <prefix>-mc-<region>-<n>")
        parser.add_argument("--seed", type=int, default=None, help="random seed, for a repeatable fleet")
        parser.add_argument("--streams", action="store_true",
                            help="MCs beat over StreamHeartbeats, one stream each, instead of a call per beat")
        parser.add_argument("--serve-assignments", action="store_true",
                            help="each MC serves AssignMeetingWithMh on a loopback port of its own (at most 1000)")
        parser.add_argument("--tls", action="store_true",
                            help="gRPC over TLS, trusting the system's CAs (implied by the --tls-* files)")
        parser.add_argument("--tls-ca-file", default=None,
                            help="PEM CA the gRPC server's certificate must chain to (implies --tls)")
        parser.add_argument("--tls-client-cert", default=None,
                            help="PEM client certificate, for a server that requires mutual TLS")
        parser.add_argument("--tls-client-key", default=None, help="PEM private key of --tls-client-cert")

    def handle(self, *args: Any, **options: Any) -> None:
        client_id, client_secret = options["client_id"], options["client_secret"]
        throwaway = None
        if not (client_id and client_secret):
            if not settings.DEBUG:
                raise CommandError("give --client-id and SIMULATE_CLIENT_SECRET (or --client-secret)")
            throwaway = service_credential_create(name="simulate_fleet (throwaway)",
                                                  scopes=["mc:register", "mh:register"])
            client_id, client_secret = throwaway.credential.client_id, throwaway.client_secret
            self.stdout.write(f"created throwaway service credential {client_id} (revoked at exit)")
            # The members an earlier run registered belong to its (revoked) credential: hand them to this one, as an
            # operator would, or every registration would be refused.
            prefix = f"{options['id_prefix']}-"
            for kind, model in ((CONTROLLERS, MeetingController), (HANDLERS, MediaHandler)):
                earlier = list(model.objects.filter(pk__startswith=prefix).values_list("pk", flat=True))
                if earlier:
                    members_transfer(kind=kind, to_client_id=client_id, member_ids=earlier)
        try:
            config = FleetConfig(
                target=options["target"], api=options["api"], client_id=client_id, client_secret=client_secret,
                controllers=options["controllers"], handlers=options["handlers"],
                regions=tuple(region.strip() for region in options["regions"].split(",") if region.strip()),
                duration=options["duration"], stale_share=options["stale_share"],
                draining_share=options["draining_share"], max_in_flight=options["max_in_flight"],
                channels=options["channels"], report_interval=options["report_interval"],
                id_prefix=options["id_prefix"], seed=options["seed"], streams=options["streams"],
                serve_assignments=options["serve_assignments"],
                tls=options["tls"], tls_ca_file=options["tls_ca_file"],
                tls_client_cert_file=options["tls_client_cert"], tls_client_key_file=options["tls_client_key"],
            )
            summary = asyncio.run(self._run(Fleet(config, write=self._write)))
        except SimulatorError as exc:
            raise CommandError(str(exc)) from None
        finally:
            if throwaway is not None:
                service_credential_revoke(client_id=throwaway.credential.client_id)
        total = format_window(summary.total, summary.state, config, elapsed=summary.total.seconds)
        self.stdout.write(f"total: {total}")
        self.stdout.write(f"calls by method: {summary.total.by_method}; codes: {summary.total.codes}; "
                          f"re-registered {summary.state.reregistered}; tokens fetched {summary.tokens_fetched}")

    async def _run(self, fleet: Fleet) -> Any:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, fleet.stop)
        return await fleet.run()

    def _write(self, line: str) -> None:
        self.stdout.write(line)
        self.stdout.flush()
