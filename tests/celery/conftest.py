"""Fixtures of the Celery tests: the real gRPC server on a loopback port that tests/grpc uses, and a service
credential whose tokens come from the token endpoint, as an MC gets them."""

from tests.grpc.conftest import grpc_server, service_credential  # noqa: F401 (fixtures, found by their names)
