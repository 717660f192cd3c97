"""Schemathesis against /api/schema/ of a live server: generated requests (valid and invalid) to every
operation, with a staff user's token (every scope), never get a 5xx, and every response matches the schema
(status documented, body shaped as documented).

One test drives every operation through its Hypothesis strategy and reports every operation that failed:
schemathesis' pytest loader for a schema from a fixture (`schemathesis.pytest.from_fixture`) does not run on
pytest 9 (it sets `node._nodeid`).
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis import strategies as st
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance

from tests.factories import make_controller, make_user, user_token

pytestmark = pytest.mark.slow

# Per operation (29 of them): enough to reach every field's edges, bounded for the suite's time.
EXAMPLES_PER_OPERATION = 12
RATE_LIMITS = ("RATE_LIMIT_LOGIN_PER_IP", "RATE_LIMIT_LOGIN_PER_EMAIL", "RATE_LIMIT_LOGIN_PER_EMAIL_AND_IP",
               "RATE_LIMIT_TOKEN_PER_CLIENT",
               "RATE_LIMIT_TOKEN_PER_IP", "RATE_LIMIT_MEETING_CREATE_PER_PRINCIPAL", "RATE_LIMIT_JOIN_PER_PRINCIPAL",
               "RATE_LIMIT_JOIN_PER_IP", "RATE_LIMIT_MEETING_UPDATE_PER_PRINCIPAL",
               "RATE_LIMIT_RECORDING_WRITE_PER_PRINCIPAL", "RATE_LIMIT_API_KEY_CREATE_PER_PRINCIPAL",
               "RATE_LIMIT_EXPORT_PER_PRINCIPAL", "RATE_LIMIT_ERASE_PER_PRINCIPAL")
# Erases the caller, after which every later request is a 401: tests/accounts/api/test_me_personal_data.py covers it.
NOT_GENERATED = {"DELETE /api/v1/me"}


def test_the_api_never_fails_and_always_answers_as_documented(live_server, transactional_db, settings):
    # Generated requests come from one address within one window; limits are not what is tested here.
    for name in RATE_LIMITS:
        setattr(settings, name, 1_000_000)
    make_controller(region=settings.DEFAULT_REGION)  # so that joins can succeed, not only be refused
    staff = make_user(is_staff=True, is_superuser=True)  # reaches every operation, the fleet's too
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 25

    failures: list[str] = []
    succeeded: set[str] = set()
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        if label in NOT_GENERATED:
            continue
        modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
        cases = st.one_of(*(operation.as_strategy(mode) for mode in modes))

        # Derandomized: the same examples every run, so that the suite is repeatable.
        @hypothesis_settings(max_examples=EXAMPLES_PER_OPERATION, deadline=None, database=None, derandomize=True,
                             suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
        @given(case=cases)
        def check(case):
            # A fresh token for every request: a generated POST /auth/logout revokes only its own.
            response = case.call(base_url=live_server.url,
                                 headers={"Authorization": f"Bearer {user_token(staff)}"})
            case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
            if response.status_code < 300:
                succeeded.add(label)

        try:
            check()
        except (Exception, BaseExceptionGroup) as failure:
            failures.append(f"{label}: {str(failure)[:3000]}")
    assert not failures, "\n\n".join(failures)
    # The token works and generated requests get past validation into the views, not only 4xx everywhere.
    assert {"GET /api/v1/me", "GET /api/v1/meetings", "POST /api/v1/meetings", "GET /api/v1/controllers",
            "POST /api/v1/api-keys"} <= succeeded, succeeded
