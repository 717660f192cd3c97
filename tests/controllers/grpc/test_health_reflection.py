"""Health checking and reflection answer without a token; health follows the database and shutdown."""

from __future__ import annotations

import time

import grpc
from django.db import connections
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from controllers.grpc.server import DatabaseWatch

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def wait_status(stub, service, expected, timeout=5.0):
    deadline = time.monotonic() + timeout
    while True:
        status = stub.Check(health_pb2.HealthCheckRequest(service=service)).status
        if status == expected or time.monotonic() > deadline:
            return status
        time.sleep(0.05)


def test_health_answers_serving_for_the_server_and_each_service(channel):
    stub = health_pb2_grpc.HealthStub(channel)
    for service in ("", "dark_tower.internal.v1.GlobalControllerService",
                    "dark_tower.internal.v1.MediaHandlerRegistryService"):
        assert wait_status(stub, service, SERVING) == SERVING


def test_health_is_not_serving_while_the_database_is_unreachable(channel, grpc_server):
    stub = health_pb2_grpc.HealthStub(channel)
    assert wait_status(stub, "", SERVING) == SERVING
    # A watch that checks often, on the server's health servicer (the server's own checks every 2 s).
    watch = DatabaseWatch(grpc_server.health, interval=0.05)
    db_settings = connections.settings["default"]
    saved = db_settings["NAME"]
    db_settings["NAME"] = "dt_grpc_no_such_database"
    watch.start()
    try:
        assert wait_status(stub, "", NOT_SERVING) == NOT_SERVING
        assert wait_status(stub, "dark_tower.internal.v1.GlobalControllerService", NOT_SERVING) == NOT_SERVING
    finally:
        db_settings["NAME"] = saved
    assert wait_status(stub, "", SERVING) == SERVING
    watch.stop()


def test_health_is_not_serving_once_shutdown_begins(channel, grpc_server):
    stub = health_pb2_grpc.HealthStub(channel)
    assert wait_status(stub, "", SERVING) == SERVING

    grpc_server.health.enter_graceful_shutdown()

    assert stub.Check(health_pb2.HealthCheckRequest(service="")).status == NOT_SERVING


def test_reflection_lists_every_service(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = stub.ServerReflectionInfo(iter([reflection_pb2.ServerReflectionRequest(list_services="")]))
    names = {service.name for response in responses for service in response.list_services_response.service}
    assert names == {
        "dark_tower.internal.v1.GlobalControllerService",
        "dark_tower.internal.v1.MediaHandlerRegistryService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    }


def test_reflection_serves_the_contract_file(channel):
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="dark_tower.internal.v1.GlobalControllerService"
    )
    response = next(stub.ServerReflectionInfo(iter([request])))
    assert response.file_descriptor_response.file_descriptor_proto
    assert not response.HasField("error_response")


def test_unknown_methods_are_unimplemented(channel):
    call = channel.unary_unary("/dark_tower.internal.v1.GlobalControllerService/NoSuchMethod")
    try:
        call(b"")
    except grpc.RpcError as error:
        assert error.code() == grpc.StatusCode.UNIMPLEMENTED
    else:
        raise AssertionError("expected UNIMPLEMENTED")
