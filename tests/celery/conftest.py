"""Fixtures of the Celery tests: the real gRPC server on a loopback port that tests/grpc uses."""

from tests.grpc.conftest import grpc_server  # noqa: F401 (a fixture, found by its name)
