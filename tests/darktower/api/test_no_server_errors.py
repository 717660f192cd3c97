"""Every route, every method, with and without credentials: never a 5xx. OPTIONS (CORS preflights, DRF's
metadata) reaches views before any permission check, so it is where a view that assumes a caller breaks."""

from __future__ import annotations

import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver

from darktower.api.errors import api_not_found
from tests.factories import make_controller, make_meeting

pytestmark = pytest.mark.django_db

METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
CODE = "abc-defg-hjk"
# Pages that are not API resources answer OPTIONS with 405; everything else describes itself (200).
OPTIONS_STATUS = {
    "/metrics": 405, "/api/docs/": 405, "/login/oidc/provider/": 405, "/login/oidc/provider/callback/": 405,
}


def routes():
    """Every URL pattern outside the admin, as a path with its parameters filled in: UUIDs that name nothing,
    an existing meeting code and controller id for the `str` parameters."""

    def walk(patterns, prefix=""):
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                yield from walk(pattern.url_patterns, prefix + str(pattern.pattern))
            elif isinstance(pattern, URLPattern) and pattern.callback is not api_not_found:
                yield prefix + str(pattern.pattern)

    # Fixed UUIDs (derived from the parameter's name), so that every collection, on every xdist worker, yields the
    # same test ids.
    fill = {
        "uuid": lambda name: str(uuid.uuid5(uuid.NAMESPACE_URL, name)),
        "str": lambda name: "mc-a" if "controller" in name else CODE,
        "int": lambda name: "1",
        "slug": lambda name: name,
    }
    for route in walk(get_resolver().url_patterns):
        if not route.startswith("admin/"):
            yield "/" + re.sub(r"<(\w+):(\w+)>", lambda match: fill[match[1]](match[2]), route)


ROUTES = sorted(set(routes()))


@pytest.fixture(autouse=True)
def world(host):
    make_controller(region="us-east-1", controller_id="mc-a")
    make_meeting(host=host, meeting_code=CODE, allow_guests=True)


def test_the_walk_finds_the_api():
    assert len(ROUTES) >= 20
    assert f"/api/v1/meetings/{CODE}/join" in ROUTES and "/.well-known/jwks.json" in ROUTES


@pytest.mark.parametrize("path", ROUTES)
def test_no_method_is_a_server_error_without_credentials(api, path):
    for method in METHODS:
        response = api.generic(method, path, "" if method in {"GET", "HEAD", "OPTIONS"} else "{}",
                               content_type="application/json")
        assert response.status_code < 500, (method, path, response.status_code, response.content[:300])
        if method == "OPTIONS":
            assert response.status_code == OPTIONS_STATUS.get(path, 200), (path, response.content[:300])


@pytest.mark.parametrize("path", ROUTES)
def test_options_with_credentials(as_user, host, path):
    response = as_user(host).options(path)
    assert response.status_code == OPTIONS_STATUS.get(path, 200), (path, response.content[:300])
