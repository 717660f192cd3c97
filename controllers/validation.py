"""Bounds on what meeting controllers and media handlers send us.

Every validator returns the cleaned value or raises InvalidInput naming the field and the rule it broke,
never echoing the value (it may be anything). Numbers are refused, never clamped: an MC that says it holds
2^31 meetings is wrong, and storing 2^31 - 1 instead would hide that.
"""

from __future__ import annotations

import ipaddress
import math
import re
import uuid
from typing import Literal, overload
from urllib.parse import urlsplit

from darktower.errors import InvalidInput

# The columns are PostgreSQL `integer`.
MAX_CAPACITY = 2**31 - 1

ID_MAX_LENGTH = 255
REGION_MAX_LENGTH = 50
ENDPOINT_MAX_LENGTH = 255

GRPC_SCHEMES = frozenset({"http", "https", "grpc"})
WEBTRANSPORT_SCHEMES = frozenset({"https"})

_ID = re.compile(r"[A-Za-z0-9._-]+")
_REGION = re.compile(r"[A-Za-z0-9-]+")
# One DNS label (RFC 1123): letters, digits, inner hyphens, at most 63 characters.
_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_DNS_NAME_MAX_LENGTH = 253


def _invalid(field: str, rule: str) -> InvalidInput:
    return InvalidInput(f"{field}: {rule}", fields={field: [rule]})


def id_ok(value: str) -> bool:
    """Whether `value` is a well-formed controller or handler id (1..255 characters of [A-Za-z0-9._-])."""
    return 1 <= len(value) <= ID_MAX_LENGTH and _ID.fullmatch(value) is not None


def validate_id(value: str, *, field: str) -> str:
    """A controller or handler id: 1..255 characters of [A-Za-z0-9._-]."""
    if not id_ok(value):
        raise _invalid(field, f"must be 1..{ID_MAX_LENGTH} characters of [A-Za-z0-9._-]")
    return value


def validate_region(value: str, *, field: str = "region") -> str:
    """A region name: 1..50 characters of [A-Za-z0-9-]."""
    rule = f"must be 1..{REGION_MAX_LENGTH} characters of [A-Za-z0-9-]"
    if not 1 <= len(value) <= REGION_MAX_LENGTH or not _REGION.fullmatch(value):
        raise _invalid(field, rule)
    return value


def _host_ok(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        pass
    name = host.removesuffix(".")
    return 0 < len(name) <= _DNS_NAME_MAX_LENGTH and all(_LABEL.fullmatch(label) for label in name.split("."))


# A required endpoint is a string; only an optional one can come back as None.
@overload
def validate_endpoint(value: str, *, field: str, schemes: frozenset[str], required: Literal[True] = True) -> str: ...
@overload
def validate_endpoint(value: str, *, field: str, schemes: frozenset[str], required: bool) -> str | None: ...
def validate_endpoint(value: str, *, field: str, schemes: frozenset[str], required: bool = True) -> str | None:
    """`scheme://host:port` with a scheme from `schemes`, a DNS-safe host or an IP literal, and a port.

    An empty value is None when not `required` (an MC without a WebTransport endpoint yet).
    """
    if not value and not required:
        return None
    allowed = "/".join(sorted(schemes))
    rule = f"must be a {allowed} URL of at most {ENDPOINT_MAX_LENGTH} characters with a DNS name or IP and a port"
    if not 1 <= len(value) <= ENDPOINT_MAX_LENGTH or not value.isascii() or not value.isprintable() or " " in value:
        raise _invalid(field, rule)
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError:
        raise _invalid(field, rule) from None
    host = parts.hostname or ""
    if (
        parts.scheme not in schemes
        or port is None
        or port == 0
        or parts.username is not None
        or parts.password is not None
        or parts.path not in ("", "/")
        or parts.query
        or parts.fragment
        or ("[" in parts.netloc and ":" not in host)  # brackets are for IPv6 literals only
        or not _host_ok(host)
    ):
        raise _invalid(field, rule)
    return value


def validate_capacity(value: int, *, field: str, minimum: int = 0) -> int:
    """A count stored in an `integer` column: minimum..2^31-1, refused (never clamped) outside."""
    if not minimum <= value <= MAX_CAPACITY:
        raise _invalid(field, f"must be between {minimum} and {MAX_CAPACITY}")
    return value


def validate_percent(value: float, *, field: str) -> float:
    """A usage percentage: a finite number within 0..100."""
    if not math.isfinite(value) or not 0.0 <= value <= 100.0:
        raise _invalid(field, "must be a finite number between 0 and 100")
    return value


def validate_uuid(value: str, *, field: str) -> uuid.UUID:
    try:
        return uuid.UUID(value)
    except ValueError:
        raise _invalid(field, "must be a UUID") from None
