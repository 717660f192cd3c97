"""The default registration limits let a whole fleet restart on one credential, and still stop one member that
crash-loops (controllers.grpc.ratelimit, with the settings' defaults)."""

from __future__ import annotations

import uuid

import pytest

from controllers.grpc.ratelimit import limit_for
from dark_tower.internal.v1 import internal_pb2 as pb
from darktower.errors import Throttled
from darktower.redis import redis_client

REGISTER_MC = f"/{pb.DESCRIPTOR.services_by_name['GlobalControllerService'].full_name}/RegisterMC"
FLEET = 20_000


@pytest.fixture(autouse=True)
def one_window(settings):
    # An hour-long window, so that the fleet's registrations all count in one (the defaults' limits are per
    # window, whatever its length).
    settings.RATE_LIMIT_WINDOW_SECONDS = 3600


@pytest.fixture
def subject():
    """A credential of this test alone (its counters start at zero), whose counters go afterwards."""
    subject = f"svc-fleet-{uuid.uuid4().hex}"
    yield subject
    client = redis_client()
    for key in client.scan_iter(f"ratelimit:grpc:register_mc:client:{subject}*", count=1000):
        client.delete(key)


def test_a_fleet_of_20000_on_one_credential_registers_within_one_window(subject):
    limit = limit_for(REGISTER_MC)
    assert limit is not None

    for number in range(FLEET):
        limit(subject, pb.RegisterMCRequest(id=f"mc-fleet-{number:05d}"))


def test_one_member_registering_over_and_over_is_refused_with_a_retry_after(settings, subject):
    limit = limit_for(REGISTER_MC)
    assert limit is not None
    request = pb.RegisterMCRequest(id="mc-crash-looping")

    for _ in range(settings.GRPC_RATE_LIMIT_REGISTER_PER_MEMBER):
        limit(subject, request)
    with pytest.raises(Throttled) as refused:
        limit(subject, request)

    assert 1 <= refused.value.retry_after_seconds <= 3600
    assert settings.GRPC_RATE_LIMIT_REGISTER_PER_MEMBER <= 10  # a crash loop stays a handful per window
    limit(subject, pb.RegisterMCRequest(id="mc-next-door"))  # its neighbours still register
