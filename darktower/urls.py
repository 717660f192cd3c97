from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView

from darktower.api.errors import api_not_found
from darktower.api.health import HealthView, ReadyView
from darktower.api.schema import SwaggerView

# The admin is the control plane's operations console; "View site" opens the API's documentation (the site has no
# page of its own at /).
admin.site.site_header = "Dark Tower control plane"
admin.site.site_title = "Dark Tower control plane"
admin.site.index_title = "Operations"
admin.site.site_url = "/api/docs/"

urlpatterns = [
    path("admin/", admin.site.urls),
    path("health", HealthView.as_view(), name="health"),
    path("ready", ReadyView.as_view(), name="ready"),
    path("metrics", include("darktower.metrics")),
    path("api/schema/", SpectacularAPIView.as_view(), name="schema"),
    path("api/docs/", SwaggerView.as_view(url_name="schema"), name="swagger-ui"),
    path("", include("accounts.urls")),
    path("", include("meetings.urls")),
    path("", include("controllers.urls")),
    # Last: any other /api/ path (a bad UUID in a path included) answers a JSON 404, DEBUG or not.
    re_path(r"^api/", api_not_found),
]

handler400 = "darktower.api.errors.bad_request"
handler403 = "darktower.api.errors.permission_denied"
handler404 = "darktower.api.errors.not_found"
handler500 = "darktower.api.errors.server_error"
