"""/api/docs/ (Swagger UI) loads every asset from this project, never from a public CDN: a CDN's script would run
on the admin's origin. The assets come from drf-spectacular-sidecar and are served by WhiteNoise."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.django_db

# src= / href= attributes and quoted URLs in the page's own script (Swagger UI's bundle and its init code).
_REFERENCES = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']|["']((?:https?:)?//[^"']+)["']""")


def _references(html: str) -> list[str]:
    return [first or second for first, second in _REFERENCES.findall(html)]


def test_the_docs_page_references_no_external_host(api):
    response = api.get("/api/docs/")

    assert response.status_code == 200
    references = _references(response.content.decode())
    assert references, "the page references no asset at all"
    external = [url for url in references if urlsplit(url).netloc not in ("", "testserver")]
    assert external == []
    assert "cdn" not in response.content.decode().lower()


def test_every_asset_the_docs_page_references_answers_200(api, client):
    html = api.get("/api/docs/").content.decode()
    assets = [url for url in _references(html) if urlsplit(url).path.startswith("/static/")]

    assert {path.rsplit("/", 1)[-1] for path in assets} >= {"swagger-ui.css", "swagger-ui-bundle.js"}
    for url in assets:
        response = client.get(urlsplit(url).path)
        assert response.status_code == 200, url
        assert b"".join(response.streaming_content if response.streaming else [response.content])
