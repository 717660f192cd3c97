"""The real gRPC server fixture of tests/grpc, for the simulator's tests."""

from tests.controllers.grpc.conftest import grpc_server  # noqa: F401 (a fixture, found by its name)
