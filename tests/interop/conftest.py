"""The real gRPC server fixtures of tests/grpc, for the calls an original MC or MH makes to us."""

from tests.controllers.grpc.conftest import (  # noqa: F401 (fixtures, found by their names)
    channel,
    grpc_server,
    mc_stub,
    mh_stub,
    roomy_grpc_rate_limits,
)
