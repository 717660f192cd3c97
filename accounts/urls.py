"""Routes of the accounts API (included at the site root)."""

from __future__ import annotations

from django.urls import path

from accounts import admin_oidc
from accounts.api import oauth, oidc_views, views

urlpatterns = [
    # Users (JSON, the API's error shape).
    path("api/v1/auth/login", views.LoginView.as_view(), name="auth-login"),
    path("api/v1/auth/logout", views.LogoutView.as_view(), name="auth-logout"),
    path("api/v1/me", views.MeView.as_view(), name="me"),
    path("api/v1/me/export", views.MeExportView.as_view(), name="me-export"),
    path("api/v1/me/providers", oidc_views.OAuthProviderListView.as_view(), name="me-providers"),
    path("api/v1/me/providers/<int:link_id>", oidc_views.OAuthProviderDetailView.as_view(), name="me-provider-detail"),
    path("api/v1/auth/oidc", oidc_views.OidcProvidersView.as_view(), name="auth-oidc-providers"),
    path("api/v1/auth/oidc/<slug:provider>/start", oidc_views.OidcStartView.as_view(), name="auth-oidc-start"),
    path("api/v1/auth/oidc/<slug:provider>/callback", oidc_views.OidcCallbackView.as_view(),
         name="auth-oidc-callback"),
    path("api/v1/api-keys", views.ApiKeyListCreateView.as_view(), name="api-keys"),
    path("api/v1/api-keys/<uuid:key_id>", views.ApiKeyDetailView.as_view(), name="api-key-detail"),
    # The admin login page's sign-in with a provider (HTML; outside admin/, whose catch-all would take them).
    path("login/oidc/<slug:provider>/", admin_oidc.admin_oidc_start, name="admin-oidc-start"),
    path("login/oidc/<slug:provider>/callback/", admin_oidc.admin_oidc_callback, name="admin-oidc-callback"),
    # Services (RFC 6749 client credentials and the JWKS; plain Django views, see accounts.api.oauth).
    path("api/v1/auth/service/token", oauth.ServiceTokenView.as_view(), name="auth-service-token"),
    path(".well-known/jwks.json", oauth.JwksView.as_view(), name="jwks"),
]
