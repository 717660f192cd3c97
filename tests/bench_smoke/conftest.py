"""The real gRPC server fixture of tests/grpc, for the simulator's tests."""

from tests.grpc.conftest import grpc_server  # noqa: F401 (a fixture, found by its name)
