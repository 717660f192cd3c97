"""The admin says things as operators say them: the Dark Tower control plane, not "Django administration"; a
"View site" that leads somewhere; gRPC, WebTransport, CPU, OAuth, API, IP and ID spelled as written, units
named."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.urls import reverse

from tests.factories import make_controller, make_handler

pytestmark = pytest.mark.django_db

# Words an operator never writes this way (a field name's spelling leaking into a label).
MISSPELLED = re.compile(
    r"\b(Grpc|grpc|Webtransport|webtransport|Cpu|cpu|O auth|o auth|Api|api|Ip|ip|Id|id|ids|Kid|kid|Gc|gc|mbps|"
    r"e2e|Is [a-z]+|percent|seconds|(?<!\()bytes)\b"
)


def _labels():
    for model in admin.site._registry:
        meta = model._meta
        if meta.app_label not in {"accounts", "audit", "controllers", "meetings"}:
            continue
        yield f"{meta.label} verbose_name", str(meta.verbose_name)
        yield f"{meta.label} verbose_name_plural", str(meta.verbose_name_plural)
        for field in meta.get_fields():
            if getattr(field, "auto_created", False) and not getattr(field, "concrete", False):
                continue
            if field.name == "id":
                continue
            yield f"{meta.label}.{field.name}", str(field.verbose_name)


def test_every_label_of_our_models_is_spelled_as_operators_say_it():
    wrong = {where: label for where, label in _labels() if MISSPELLED.search(label)}
    assert wrong == {}


def test_the_site_is_branded_and_view_site_leads_to_the_api_docs(client, superuser):
    client.force_login(superuser)
    page = client.get(reverse("admin:index")).content.decode()
    assert "Django administration" not in page and "Django site admin" not in page
    assert "<title>Operations | Dark Tower control plane</title>" in page
    assert '<a href="/admin/">Dark Tower control plane</a>' in page
    assert '<a href="/api/docs/">View site</a>' in page
    assert client.get("/api/docs/").status_code == 200


def test_the_sidebar_and_a_controllers_page_use_operators_words(client, superuser):
    controller = make_controller(region="us-east-1")
    handler = make_handler(region="us-east-1")
    client.force_login(superuser)
    index = client.get(reverse("admin:index")).content.decode()
    assert "OAuth providers" in index and "O auth" not in index
    assert "API keys" in index

    page = client.get(reverse("admin:controllers_meetingcontroller_change", args=[controller.pk])).content.decode()
    for label in ("gRPC endpoint", "WebTransport endpoint", "CPU usage (%)", "Memory usage (%)", "Controller ID"):
        assert label in page, label
    for wrong in ("Grpc endpoint", "Webtransport endpoint", "Cpu usage"):
        assert wrong not in page, wrong
    page = client.get(reverse("admin:controllers_mediahandler_change", args=[handler.pk])).content.decode()
    for label in ("gRPC endpoint", "WebTransport endpoint", "Bandwidth usage (%)", "Handler ID"):
        assert label in page, label
