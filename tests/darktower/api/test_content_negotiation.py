"""What the API answers for each Accept header and `?format=`: JSON for a client that takes it (no header, */*,
application/json, with or without parameters), 406 in the error shape for one that does not, 404 for a format the
API does not render."""

from __future__ import annotations

import pytest
from rest_framework.test import APIClient

from tests.factories import make_user, user_token
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db


@pytest.fixture
def client():
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {user_token(make_user())}")
    return client


@pytest.mark.parametrize("accept", [None, "*/*", "application/json", "application/*", "application/json; indent=2",
                                    "text/html, application/json;q=0.9", "application/json, */*"])
def test_clients_that_take_json_get_json(client, accept):
    response = client.get("/api/v1/meetings", **({"HTTP_ACCEPT": accept} if accept is not None else {}))
    assert response.status_code == 200, response.content
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"count": 0, "next": None, "previous": None, "results": []}


def test_an_indent_asked_for_is_honoured(client):
    response = client.get("/api/v1/meetings", HTTP_ACCEPT="application/json; indent=2")
    assert response.content.decode().startswith("{\n  ")


@pytest.mark.parametrize("accept", ["text/html", "application/xml", "text/*"])
def test_clients_that_refuse_json_get_406(client, accept):
    assert_error(client.get("/api/v1/meetings", HTTP_ACCEPT=accept), 406, "not_acceptable")


def test_a_format_the_api_does_not_render_is_404(client):
    assert client.get("/api/v1/meetings?format=xml").status_code == 404
    assert client.get("/api/v1/meetings?format=json").status_code == 200
