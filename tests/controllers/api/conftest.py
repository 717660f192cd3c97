"""The REST API clients (tests/fixtures/api.py); roomy_rate_limits applies to every test here."""

from tests.fixtures.api import api, as_key, as_user, host, other, roomy_rate_limits  # noqa: F401 (fixtures)
