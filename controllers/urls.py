"""Routes of the fleet API: listings, drain and undrain of controllers (included at the site root)."""

from __future__ import annotations

from django.urls import path

from controllers.api import fleet

urlpatterns = [
    path("api/v1/controllers", fleet.ControllerListView.as_view(), name="controllers"),
    path("api/v1/controllers/<str:controller_id>/drain", fleet.ControllerDrainView.as_view(), name="controller-drain"),
    path(
        "api/v1/controllers/<str:controller_id>/undrain", fleet.ControllerUndrainView.as_view(),
        name="controller-undrain",
    ),
    path("api/v1/media-handlers", fleet.MediaHandlerListView.as_view(), name="media-handlers"),
]
