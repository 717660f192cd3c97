"""The client's address, also behind a reverse proxy.

X-Forwarded-For is honoured only when the peer (REMOTE_ADDR, the address the WSGI server accepted the connection
from) is in TRUSTED_PROXIES; by default no proxy is trusted and the header is never read. Each trusted proxy
appends the address it received the request from, so the header is read from the right: the first address that
is not a trusted proxy is the client. Everything left of it was written by the client or by proxies it chose,
and would let any caller pick its own rate-limit bucket, audit address or /metrics access.

A malformed entry ends the walk at the nearest hop known good (the last trusted proxy reached): a trusted proxy
never writes one, so it came from further out.

X-Forwarded-Proto follows the same rule: ForwardedProtoMiddleware drops it from requests whose peer is not a
trusted proxy, so SECURE_PROXY_SSL_HEADER never believes a client that reached the process directly.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse

# An address is at most 45 characters (IPv4-mapped IPv6); a longer entry is not parsed.
_MAX_ENTRY = 64

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _address(text: str) -> IPAddress | None:
    text = text.strip()
    if not text or len(text) > _MAX_ENTRY:
        return None
    try:
        return ipaddress.ip_address(text)
    except ValueError:
        return None


def _trusted(address: IPAddress, proxies: Iterable[IPNetwork]) -> bool:
    return any(address in network for network in proxies)


def client_address(meta: Mapping[str, Any]) -> str | None:
    """The client's IP address in canonical form (see the module docstring), or None when the peer is no IP
    address (a unix socket)."""
    peer = _address(str(meta.get("REMOTE_ADDR") or ""))
    if peer is None:
        return None
    proxies = settings.TRUSTED_PROXIES_PARSED
    if not proxies or not _trusted(peer, proxies):
        return str(peer)
    nearest = peer
    for entry in reversed(str(meta.get("HTTP_X_FORWARDED_FOR") or "").split(",")):
        if not entry.strip():
            continue
        hop = _address(entry)
        if hop is None:
            break
        if not _trusted(hop, proxies):
            return str(hop)
        nearest = hop
    return str(nearest)


def peer_is_trusted_proxy(meta: Mapping[str, Any]) -> bool:
    peer = _address(str(meta.get("REMOTE_ADDR") or ""))
    return peer is not None and _trusted(peer, settings.TRUSTED_PROXIES_PARSED)


class ForwardedProtoMiddleware:
    """Drops X-Forwarded-Proto unless the peer is a trusted proxy. Before SecurityMiddleware, which reads it
    (through SECURE_PROXY_SSL_HEADER) for the HTTPS redirect."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if "HTTP_X_FORWARDED_PROTO" in request.META and not peer_is_trusted_proxy(request.META):
            del request.META["HTTP_X_FORWARDED_PROTO"]
        return self.get_response(request)
