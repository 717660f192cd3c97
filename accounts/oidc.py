"""The client side of sign-in with OpenID Connect, through Authlib's Django integration.

Authorization code flow with PKCE (S256), `state` and `nonce`; Authlib keeps the three in the Django session of
the browser that started the flow, so a callback from another browser finds no state and is refused. The
provider's endpoints come from its discovery document (ISSUER/.well-known/openid-configuration) and its keys
from its JWKS; the ID token's signature, issuer, audience, nonce, issue and expiry times are checked here before
any account is looked at (`accounts.services.oidc` decides what the identity signs in to).

Both doors (the admin login page and the REST API) start and finish the flow with these two functions.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import requests

# Authlib ships no types (typeshed's stubs lag its releases); what it returns is typed where it leaves this module.
from authlib.integrations.base_client.errors import MismatchingStateError, OAuthError  # type: ignore[import-untyped]
from authlib.integrations.django_client import DjangoOAuth2App, OAuth  # type: ignore[import-untyped]
from authlib.oidc.core import CodeIDToken  # type: ignore[import-untyped]
from django.conf import settings
from django.http import HttpRequest, HttpResponseRedirect
from joserfc.errors import JoseError

from darktower.errors import NotFound, ProviderUnavailable, Unauthenticated

# The clock ID tokens are checked against when the caller passes no `now`; tests replace it.
clock: Callable[[], float] = time.time

# How long a client whose provider could not be reached waits before a retry is worth it.
RETRY_AFTER_SECONDS = 30


@dataclass(frozen=True)
class ProviderConfig:
    name: str
    display_name: str
    issuer: str
    client_id: str
    client_secret: str = field(repr=False)
    scopes: str


@dataclass(frozen=True)
class ProviderIdentity:
    """Who the provider says signed in, after the ID token was checked. The tokens never reach a log or repr."""

    provider: str
    subject: str
    email: str | None
    email_verified: bool
    name: str
    access_token: str | None = field(repr=False)
    refresh_token: str | None = field(repr=False)
    access_token_expires_at: datetime | None


def oidc_providers() -> list[ProviderConfig]:
    """The configured providers, in the order OIDC_PROVIDERS names them."""
    return [ProviderConfig(name=name, **config) for name, config in settings.OIDC_PROVIDERS.items()]


def oidc_provider(name: str) -> ProviderConfig:
    config = settings.OIDC_PROVIDERS.get(name)
    if config is None:
        raise NotFound("No such sign-in provider.")
    return ProviderConfig(name=name, **config)


# One Authlib client per configuration, so that a process fetches a provider's discovery document and keys once
# (Authlib fetches the JWKS again when an ID token names a key it does not hold: a provider's key rotation).
_clients: dict[ProviderConfig, DjangoOAuth2App] = {}
_clients_lock = threading.Lock()


def _client(config: ProviderConfig) -> DjangoOAuth2App:
    with _clients_lock:
        client = _clients.get(config)
        if client is None:
            registry = OAuth()
            client = registry.register(
                name=config.name, client_id=config.client_id, client_secret=config.client_secret,
                server_metadata_url=f"{config.issuer}/.well-known/openid-configuration",
                client_kwargs={"scope": config.scopes, "code_challenge_method": "S256",
                               "default_timeout": settings.OIDC_HTTP_TIMEOUT_SECONDS},
            )
            _clients[config] = client
        return client


def _unavailable(config: ProviderConfig) -> ProviderUnavailable:
    # The cause stays out of the message: it may carry the provider's response, which can echo a secret.
    return ProviderUnavailable(
        f"The sign-in provider {config.display_name} cannot be reached; retry later.",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    )


def _metadata(config: ProviderConfig, client: DjangoOAuth2App) -> dict[str, Any]:
    try:
        metadata: dict[str, Any] = client.load_server_metadata()
    except (requests.RequestException, ValueError):
        raise _unavailable(config) from None
    # OpenID Connect Discovery 1.0, section 4.3: the document must name the issuer it was fetched for.
    if metadata.get("issuer", "").rstrip("/") != config.issuer:
        client.server_metadata.clear()
        raise _unavailable(config)
    return metadata


def oidc_start(request: HttpRequest, *, provider: str, redirect_uri: str) -> HttpResponseRedirect:
    """Redirect the browser to the provider, with a fresh state, nonce and PKCE challenge kept in its session."""
    config = oidc_provider(provider)
    client = _client(config)
    _metadata(config, client)
    response: HttpResponseRedirect = client.authorize_redirect(request, redirect_uri)
    return response


def _id_token_claims_class(now: float) -> type[CodeIDToken]:
    class CheckedAt(CodeIDToken):
        def validate(self, now: float | None = None, leeway: float = 0) -> None:
            super().validate(now=check_time, leeway=leeway)

    check_time = now
    return CheckedAt


def oidc_finish(request: HttpRequest, *, provider: str, now: float | None = None) -> ProviderIdentity:
    """Check the callback's state against the session, exchange the code (with the PKCE verifier) and check the
    ID token at `now` (the current time unless given). Refusals raise Unauthenticated; an unreachable provider
    ProviderUnavailable. Nothing is written."""
    config = oidc_provider(provider)
    client = _client(config)
    state = request.GET.get("state")
    state_data = client.framework.get_state_data(request.session, state) if state else None
    if state_data is not None:
        # A state is good for one answer, whatever it is.
        client.framework.clear_state_data(request.session, state)
    if request.GET.get("error"):
        raise Unauthenticated("The sign-in provider refused the sign-in.")
    if state_data is None or not state_data.get("nonce") or not state_data.get("code_verifier"):
        raise Unauthenticated("This sign-in was not started here, or has expired; start again.")
    code = request.GET.get("code")
    if not code:
        raise Unauthenticated("The sign-in provider sent no authorization code.")

    metadata = _metadata(config, client)
    try:
        token = client.fetch_access_token(
            redirect_uri=state_data["redirect_uri"], code=code, code_verifier=state_data["code_verifier"]
        )
    except OAuthError:
        raise Unauthenticated("The sign-in provider refused the authorization code.") from None
    except (requests.RequestException, ValueError):
        raise _unavailable(config) from None
    if "id_token" not in token:
        raise Unauthenticated("The sign-in provider sent no ID token.")
    try:
        claims = client.parse_id_token(
            token, nonce=state_data["nonce"],
            # Authlib checks the audience only through `azp`; OpenID Connect Core 3.1.3.7 wants our client id in
            # `aud` itself.
            claims_options={"iss": {"essential": True, "value": metadata["issuer"]},
                            "aud": {"essential": True, "value": config.client_id}},
            claims_cls=_id_token_claims_class(clock() if now is None else now),
            leeway=settings.OIDC_CLOCK_SKEW_SECONDS,
        )
    except (JoseError, MismatchingStateError, ValueError):
        raise Unauthenticated("The ID token from the sign-in provider is not valid.") from None
    except requests.RequestException:
        raise _unavailable(config) from None

    values = dict(claims)
    if "email" not in values and token.get("access_token"):
        # A provider may keep profile claims out of the ID token (OpenID Connect Core 5.4); its userinfo endpoint
        # has them, and they count only for the subject the ID token named.
        try:
            userinfo = dict(client.userinfo(token=token))
        except requests.RequestException:
            raise _unavailable(config) from None
        if userinfo.get("sub") == values["sub"]:
            values = {**userinfo, **values}
    expires_at = token.get("expires_at")
    return ProviderIdentity(
        provider=config.name, subject=str(values["sub"]),
        email=str(values["email"]) if values.get("email") else None,
        email_verified=values.get("email_verified") is True,
        name=str(values.get("name") or ""),
        access_token=token.get("access_token"), refresh_token=token.get("refresh_token"),
        access_token_expires_at=datetime.fromtimestamp(expires_at, UTC) if expires_at else None,
    )
