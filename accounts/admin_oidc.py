"""The admin's door to sign-in with OpenID Connect: the login page's "Sign in with <provider>" links start the
flow here, and the callback opens a Django session for active staff. Thin: parse, call one service, render; the
same service (accounts.services.oidc.user_oidc_sign_in) serves the REST door.
"""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import login
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.urls import reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from accounts.oidc import oidc_start
from accounts.services.oidc import user_oidc_sign_in
from accounts.services.users import login_throttle_fallback
from darktower.api.ratelimit import login_address_limit, ratelimit_reserve
from darktower.api.views import client_ip, peer_ip
from darktower.errors import DomainError, ProviderUnavailable

NEXT_SESSION_KEY = "_oidc_admin_next"


def _login_page(request: HttpRequest, message: str) -> HttpResponseRedirect:
    messages.error(request, message)
    return HttpResponseRedirect(reverse("admin:login"))


@never_cache
@require_GET
def admin_oidc_start(request: HttpRequest, provider: str) -> HttpResponse:
    next_url = request.GET.get("next", "")
    # Only a page of this site: an open redirect after sign-in would lend our name to a phishing link.
    if not url_has_allowed_host_and_scheme(next_url, allowed_hosts={request.get_host()},
                                           require_https=request.is_secure()):
        next_url = reverse("admin:index")
    request.session[NEXT_SESSION_KEY] = next_url
    try:
        return oidc_start(request, provider=provider,
                          redirect_uri=request.build_absolute_uri(reverse("admin-oidc-callback", args=[provider])))
    except DomainError as exc:
        return _login_page(request, exc.message)


@never_cache
@require_GET
def admin_oidc_callback(request: HttpRequest, provider: str) -> HttpResponse:
    address = peer_ip(request)
    try:
        # As at the REST door: a failed sign-in counts against the per-address login limit, a success does not.
        refund = ratelimit_reserve(
            [login_address_limit(ip_address=client_ip(request))],
            on_unavailable=lambda: login_throttle_fallback(email_hash_hex="", ip_address=address),
        )
    except DomainError as exc:
        return _login_page(request, exc.message)
    try:
        result = user_oidc_sign_in(
            request=request, provider=provider, door="admin", ip_address=address,
            user_agent=request.META.get("HTTP_USER_AGENT", "")[:1000] or None,
        )
    except ProviderUnavailable as exc:
        refund()
        return _login_page(request, exc.message)
    except DomainError as exc:
        return _login_page(request, exc.message)
    refund()
    next_url = request.session.pop(NEXT_SESSION_KEY, None) or reverse("admin:index")
    # login() cycles the session key, so a session fixed before the sign-in is not the one that is signed in.
    login(request, result.user, backend="django.contrib.auth.backends.ModelBackend")
    return HttpResponseRedirect(next_url)
