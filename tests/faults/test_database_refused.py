"""A request that cannot get a database connection answers 503 with Retry-After, never a 500, and an outage logs
one warning, not one per request. This process's connection is pointed at a TCP port where nothing listens (the
shared test server is never touched), then restored; the real server cases are in test_database_burst.py."""

from __future__ import annotations

import json
import logging
import socket
import uuid

import pytest
from django.db import InterfaceError, OperationalError, connection
from rest_framework.test import APIClient

from darktower.api.errors import server_error
from darktower.database_outage import database_outage, is_connection_failure

OUTAGE_LOGGER = "darktower.database_outage"


@pytest.fixture
def database_unreachable(transactional_db, django_db_blocker):
    # A bound socket that never listens: connecting to its port is refused at once, and no other process can
    # take the port while the test runs.
    saved = {name: connection.settings_dict[name] for name in ("HOST", "PORT")}
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as closed, django_db_blocker.unblock():
        closed.bind(("127.0.0.1", 0))
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed.getsockname()[1]))

        def restore() -> None:
            connection.close()
            connection.settings_dict.update(saved)

        try:
            yield restore
        finally:
            restore()
            database_outage.reached()  # no outage left open for the next test


def guest_join(client: APIClient | None = None):
    return (client or APIClient()).post(
        f"/api/v1/meetings/{uuid.uuid4()}/guest-token", {"display_name": "Guest"}, format="json",
        REMOTE_ADDR="192.0.2.10",
    )


def test_a_join_without_the_database_answers_503_with_retry_after(database_unreachable):
    response = guest_join()
    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    assert response.json() == {"error": {
        "code": "service_unavailable", "message": "The database is unavailable; retry shortly.", "fields": {},
    }}


def test_a_plain_django_view_without_the_database_answers_503_not_500(database_unreachable):
    # The admin's login authenticates against the users table: a view that is not DRF's.
    response = APIClient().post("/admin/login/", {"username": "someone@example.test", "password": "x"})
    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    assert "Traceback" not in response.content.decode()


def test_an_outage_logs_one_warning_and_its_end_once(database_unreachable, caplog, django_db_blocker):
    caplog.set_level(logging.INFO, logger=OUTAGE_LOGGER)
    assert [guest_join().status_code for _ in range(5)] == [503] * 5
    warnings = [record for record in caplog.records if record.name == OUTAGE_LOGGER]
    assert [record.levelno for record in warnings] == [logging.WARNING]
    assert not [record for record in caplog.records if record.levelno >= logging.ERROR]

    database_unreachable()  # the database is back
    caplog.clear()
    assert guest_join().status_code == 404  # the meeting does not exist: the database answered
    assert guest_join().status_code == 404
    ends = [record for record in caplog.records if record.name == OUTAGE_LOGGER]
    assert [record.levelno for record in ends] == [logging.INFO]
    assert "5 requests were refused" in ends[0].getMessage()


def test_a_connection_failure_in_a_middleware_answers_503_through_handler500(rf):
    # Django calls handler500 while it handles what a middleware raised (with DEBUG off).
    try:
        raise OperationalError("server closed the connection unexpectedly")
    except OperationalError:
        response = server_error(rf.get("/api/v1/meetings"))
    database_outage.reached()
    assert response.status_code == 503
    assert int(response["Retry-After"]) >= 1
    assert json.loads(response.content)["error"]["code"] == "service_unavailable"


def test_statement_errors_are_not_connection_failures():
    # A deadlock or a refused value is the statement's problem (answered elsewhere), not an outage.
    class Cause(Exception):
        sqlstate = "40P01"

    deadlock = OperationalError("deadlock detected")
    deadlock.__cause__ = Cause()
    assert not is_connection_failure(deadlock)
    too_many = OperationalError("sorry, too many clients already")
    too_many.__cause__ = type("TooMany", (Exception,), {"sqlstate": "53300"})()
    assert is_connection_failure(too_many)
    assert is_connection_failure(OperationalError("connection refused"))
    assert is_connection_failure(InterfaceError("connection already closed"))
