"""A test-only URLconf for the metrics middleware tests (ROOT_URLCONF override)."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import include, path

from darktower.metrics import metrics_view


def item(request: HttpRequest, item_id: int) -> HttpResponse:
    return HttpResponse(f"item {item_id}")


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view failed")


def thing(request: HttpRequest, name: str) -> HttpResponse:
    return HttpResponse(f"thing {name}")


nested = [path("things/<slug:name>", thing)]

urlpatterns = [
    path("items/<int:item_id>", item),
    path("boom", boom),
    path("api/v9/", include(nested)),
    path("metrics", metrics_view),
]
