"""The project's URLconf plus one view that raises: the only route the real site lacks for the 500 test."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse
from django.urls import path

from darktower.urls import handler404, handler500
from darktower.urls import urlpatterns as site_urlpatterns

__all__ = ["handler404", "handler500", "urlpatterns"]


def boom(request: HttpRequest) -> HttpResponse:
    raise RuntimeError("the view failed")


urlpatterns = [path("test-boom", boom), *site_urlpatterns]
