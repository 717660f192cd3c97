"""The running gRPC server of tests/controllers/grpc, for the README's minimal MC."""

from tests.controllers.grpc.conftest import grpc_server  # noqa: F401 (a fixture, found by its name)
