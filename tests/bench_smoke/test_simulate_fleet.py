"""The fleet simulator against the real token endpoint (live HTTP server) and a real gRPC server on loopback."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from django.core.management import CommandError, call_command

from accounts.services.service_tokens import service_credential_create
from controllers.grpc.server import GrpcServer, ServerTls
from controllers.heartbeats import RECORDERS
from controllers.models import HealthStatus, MediaHandler, MeetingController
from tests.beats import recorder_reset
from tests.controllers.grpc.tls import make_tls_files, tls_grpc_server
from tools.simulator import Fleet, FleetConfig, SimulatorError

pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def fast_intervals(settings):
    # Autouse: set before the grpc_server fixture (tests/controllers/grpc/conftest.py) starts the server.
    settings.FAST_HEARTBEAT_INTERVAL_MS = 1000
    settings.COMPREHENSIVE_HEARTBEAT_INTERVAL_MS = 1500
    settings.MH_LOAD_REPORT_INTERVAL_MS = 1000
    settings.HEARTBEAT_FLUSH_INTERVAL_MS = 50


@pytest.fixture
def credential(transactional_db):
    return service_credential_create(name="simulator test", scopes=["mc:register", "mh:register"])


def config(server: GrpcServer, api: str, credential, **overrides) -> FleetConfig:
    values = {
        "target": f"127.0.0.1:{server.port}", "api": api, "client_id": credential.credential.client_id,
        "client_secret": credential.client_secret, "controllers": 12, "handlers": 4,
        "regions": ("us-east-1", "eu-west-1"), "duration": 5.0, "stale_share": 0.25, "draining_share": 0.25,
        "report_interval": 1.0, "seed": 7, "startup_wait": 5.0,
    }
    values.update(overrides)
    return FleetConfig(**values)


def test_fleet_registers_beats_goes_silent_and_drains(grpc_server, live_server, credential):
    lines: list[str] = []
    fleet = Fleet(config(grpc_server, live_server.url, credential), write=lines.append)

    summary = asyncio.run(fleet.run())

    assert summary.total.errors == {}
    assert summary.state.registered == 16
    assert summary.state.silent == 4  # 25 % of 12 controllers and of 4 handlers
    assert summary.state.draining == 4
    assert summary.tokens_fetched == 1
    methods = summary.total.by_method
    assert methods["RegisterMC"] == 12 and methods["RegisterMH"] == 4
    assert methods["FastHeartbeat"] > 12 and methods["ComprehensiveHeartbeat"] >= 9 and methods["SendLoadReport"] >= 4
    assert summary.total.p99_ms > 0
    assert any("calls/s" in line and "p99" in line for line in lines)
    assert [line for line in lines if "members registered" in line] == ["all 16 members registered"]
    for recorder in RECORDERS:
        recorder.flush()
    controllers = MeetingController.objects.filter(controller_id__startswith="sim-mc-")
    assert controllers.count() == 12
    assert set(controllers.values_list("region", flat=True)) == {"us-east-1", "eu-west-1"}
    assert controllers.filter(health_status=HealthStatus.DRAINING).count() == 3
    assert controllers.filter(health_status=HealthStatus.HEALTHY).count() == 9
    assert MediaHandler.objects.filter(handler_id__startswith="sim-mh-").count() == 4
    assert all(text not in "\n".join(lines) for text in (credential.client_secret, "Bearer"))


def test_a_fleet_on_heartbeat_streams_beats_and_drains(grpc_server, live_server, credential):
    fleet = Fleet(config(grpc_server, live_server.url, credential, handlers=0, streams=True),
                  write=lambda line: None)

    summary = asyncio.run(fleet.run())

    assert summary.total.errors == {}
    assert summary.state.registered == 12
    methods = summary.total.by_method
    assert methods["StreamHeartbeats/fast"] > 12 and methods["StreamHeartbeats/comprehensive"] >= 9
    assert "FastHeartbeat" not in methods and "ComprehensiveHeartbeat" not in methods
    for recorder in RECORDERS:
        recorder.flush()
    controllers = MeetingController.objects.filter(controller_id__startswith="sim-mc-")
    assert controllers.filter(health_status=HealthStatus.DRAINING).count() == 3
    assert controllers.filter(health_status=HealthStatus.HEALTHY).count() == 9


@pytest.mark.parametrize(("streams", "fast"), [(False, "FastHeartbeat"), (True, "StreamHeartbeats/fast")],
                         ids=["calls", "streams"])
def test_a_deleted_controller_registers_again(grpc_server, live_server, credential, streams, fast):
    async def run() -> Fleet:
        fleet = Fleet(config(grpc_server, live_server.url, credential, controllers=1, handlers=0, duration=None,
                             stale_share=0.0, draining_share=0.0, streams=streams), write=lambda line: None)
        task = asyncio.create_task(fleet.run())
        while fleet.state.registered < 1 or fleet.stats.methods[fast] < 1:
            await asyncio.sleep(0.05)
        await asyncio.to_thread(lambda: MeetingController.objects.all().delete())
        for recorder in RECORDERS:
            recorder_reset(recorder)  # what a restarted GC process would know
        # The refused beat (on a stream: the stream it ended), the registration, then a beat of the new row.
        while fleet.state.reregistered < 1 or fleet.stats.methods[fast] < 3:
            await asyncio.sleep(0.05)
        fleet.stop()
        await task
        return fleet

    fleet = asyncio.run(asyncio.wait_for(run(), timeout=20))

    assert fleet.stats.codes["NOT_FOUND"] >= 1
    assert fleet.stats.methods["RegisterMC"] == 2
    assert MeetingController.objects.get().health_status == HealthStatus.HEALTHY


def test_a_fleet_over_mutual_tls(live_server, credential, tmp_path):
    files = make_tls_files(tmp_path)
    tls = ServerTls(certificate_chain=files.read("server_cert"), private_key=files.read("server_key"),
                    client_ca=files.read("ca"))
    with tls_grpc_server(tls) as server:
        mutual = config(server, live_server.url, credential, controllers=2, handlers=1, duration=2.5,
                        stale_share=0.0, draining_share=0.0, streams=True, tls_ca_file=str(files.ca),
                        tls_client_cert_file=str(files.client_cert), tls_client_key_file=str(files.client_key))
        summary = asyncio.run(Fleet(mutual, write=lambda line: None).run())

        assert summary.total.errors == {}
        assert summary.state.registered == 3
        assert summary.total.by_method["StreamHeartbeats/fast"] >= 2
        # Without its client certificate the fleet cannot reach the server; without TLS neither.
        for missing in ({"tls_client_cert_file": None, "tls_client_key_file": None},
                        {"tls_ca_file": None, "tls_client_cert_file": None, "tls_client_key_file": None}):
            refused = dataclasses.replace(mutual, controllers=1, handlers=0, startup_wait=1.5, **missing)
            with pytest.raises(SimulatorError, match="unreachable"):
                asyncio.run(Fleet(refused, write=lambda line: None).run())


def test_a_client_certificate_needs_its_key():
    with pytest.raises(SimulatorError, match="go together"):
        FleetConfig(target="127.0.0.1:1", api="http://127.0.0.1:1", client_id="svc", client_secret="x",
                    tls_client_cert_file="client.pem")


def test_refused_credentials_stop_the_run(grpc_server, live_server, credential):
    bad = config(grpc_server, live_server.url, credential, client_secret="dtsec_wrong")

    with pytest.raises(SimulatorError, match="HTTP 401 invalid_client"):
        asyncio.run(Fleet(bad, write=lambda line: None).run())


def test_command_needs_credentials_without_debug(settings):
    settings.DEBUG = False
    settings.SIMULATE_CLIENT_ID = None
    settings.SIMULATE_CLIENT_SECRET = None

    with pytest.raises(CommandError, match="--client-id"):
        call_command("simulate_fleet", "--controllers", "1", "--duration", "1")


def test_command_runs_with_a_throwaway_credential(grpc_server, live_server, settings, capsys):
    settings.DEBUG = True
    settings.SIMULATE_CLIENT_ID = None
    settings.SIMULATE_CLIENT_SECRET = None

    call_command("simulate_fleet", "--controllers", "3", "--duration", "2.5", "--target",
                 f"127.0.0.1:{grpc_server.port}", "--api", live_server.url, "--report-interval", "1")

    out = capsys.readouterr().out
    assert "created throwaway service credential svc_" in out
    assert "total:" in out and "registered 3/3" in out
    from accounts.models import ServiceCredential

    assert ServiceCredential.objects.get().is_active is False


@pytest.mark.mc_calls
def test_simulated_mcs_accept_the_gcs_assignments(grpc_server, live_server, credential):
    """With serve_assignments, a join's placement asks one of the simulated MCs, which accepts it."""
    from meetings.services.assignment import meeting_place
    from tests.factories import make_meeting

    fleet = Fleet(config(grpc_server, live_server.url, credential, controllers=3, handlers=1, regions=("us-east-1",),
                         duration=None, stale_share=0.0, draining_share=0.0, serve_assignments=True),
                  write=lambda line: None)
    meeting = make_meeting(allow_guests=True)

    async def run():
        task = asyncio.create_task(fleet.run())
        # Healthy MCs and a handler with a load report, as placement needs them.
        while (await asyncio.to_thread(lambda: (
            MeetingController.objects.filter(health_status=HealthStatus.HEALTHY).count(),
            MediaHandler.objects.filter(health_status=HealthStatus.HEALTHY).count(),
        ))) != (3, 1):
            await asyncio.sleep(0.05)
        assignment = await asyncio.to_thread(meeting_place, meeting_id=meeting.pk, region="us-east-1")
        fleet.stop()
        await task
        return assignment

    assignment = asyncio.run(asyncio.wait_for(run(), timeout=30))

    assert fleet.state.meetings_accepted == 1 and fleet.state.meetings_refused == 0
    assert assignment.controller_id.startswith("sim-mc-us-east-1-")
    assert assignment.grpc_endpoint.startswith("http://127.0.0.1:")
    assert [h.handler_id for h in assignment.media_handlers] == ["sim-mh-us-east-1-000000"]


def test_a_second_throwaway_run_takes_over_the_first_runs_members(grpc_server, live_server, settings, capsys):
    settings.DEBUG = True
    settings.SIMULATE_CLIENT_ID = None
    settings.SIMULATE_CLIENT_SECRET = None
    arguments = ("simulate_fleet", "--controllers", "2", "--duration", "2", "--target",
                 f"127.0.0.1:{grpc_server.port}", "--api", live_server.url, "--report-interval", "1")

    call_command(*arguments)
    capsys.readouterr()
    call_command(*arguments)

    out = capsys.readouterr().out
    assert "registered 2/2" in out
    from accounts.models import ServiceCredential
    from controllers.models import MeetingController

    second = ServiceCredential.objects.order_by("-created_at").first()
    assert set(MeetingController.objects.values_list("owner_client_id", flat=True)) == {second.client_id}
