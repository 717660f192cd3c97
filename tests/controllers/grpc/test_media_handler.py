"""MediaHandlerRegistryService end to end."""

from __future__ import annotations

import grpc
import pytest

from audit.models import AuditLog
from controllers.heartbeats import handler_load_reports
from controllers.models import HealthStatus, MediaHandler
from dark_tower.internal.v1 import internal_pb2 as pb
from tests.factories import make_handler


def test_register_mh_then_load_reports(mh_stub, auth):
    response = mh_stub.RegisterMH(
        pb.RegisterMHRequest(handler_id="mh-e2e-1", region="eu-west-1", grpc_endpoint="grpc://mh1.internal:50053",
                             webtransport_endpoint="https://mh1.internal:4433", max_streams=300),
        metadata=auth,
    )
    assert response.accepted and response.load_report_interval_ms == 10000
    assert MediaHandler.objects.get(pk="mh-e2e-1").health_status == HealthStatus.PENDING

    report = pb.SendLoadReportRequest(handler_id="mh-e2e-1", current_streams=12, health=pb.HEALTHY,
                                      cpu_usage_percent=10, memory_usage_percent=20, bandwidth_usage_percent=30)
    assert mh_stub.SendLoadReport(report, metadata=auth).acknowledged
    assert MediaHandler.objects.get(pk="mh-e2e-1").health_status == HealthStatus.HEALTHY

    report.current_streams = 40
    assert mh_stub.SendLoadReport(report, metadata=auth).acknowledged
    handler_load_reports.flush()
    handler = MediaHandler.objects.get(pk="mh-e2e-1")
    assert (handler.current_streams, handler.bandwidth_usage_percent) == (40, 30.0)
    assert list(
        AuditLog.objects.filter(target_id="mh-e2e-1").order_by("id").values_list("event_type", flat=True)
    ) == ["media_handler_registered", "media_handler_healthy"]


def test_load_report_from_an_unknown_handler_is_not_found(mh_stub, auth):
    make_handler(handler_id="mh-known")
    with pytest.raises(grpc.RpcError) as error:
        mh_stub.SendLoadReport(pb.SendLoadReportRequest(handler_id="mh-unknown"), metadata=auth)
    assert error.value.code() == grpc.StatusCode.NOT_FOUND
