"""These tests run at the settings' own rate limits: the roomy limits of tests/meetings/conftest.py stop here."""

import pytest


@pytest.fixture(autouse=True)
def roomy_rate_limits():
    """Overrides the API clients' autouse fixture of the same name with nothing."""
