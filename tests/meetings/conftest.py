"""The API clients of tests/api, and a region with meeting controllers to join through."""

from __future__ import annotations

import pytest

from tests.factories import make_controller
from tests.fixtures.api import api, as_key, as_user, host, other, roomy_rate_limits  # noqa: F401 (fixtures)

REGION = "us-east-1"


@pytest.fixture
def controller(db):
    return make_controller(region=REGION, controller_id="mc-us-east-1-a")
