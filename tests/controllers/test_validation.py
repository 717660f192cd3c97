"""The bounds on what MCs and MHs send, at each edge, on the validators themselves."""

from __future__ import annotations

import math

import pytest

from controllers.validation import (
    GRPC_SCHEMES,
    MAX_CAPACITY,
    WEBTRANSPORT_SCHEMES,
    validate_capacity,
    validate_endpoint,
    validate_id,
    validate_percent,
    validate_region,
)
from darktower.errors import InvalidInput


@pytest.mark.parametrize("value", ["a", "x" * 255, "mc-1.us_east-1", "A.B-C_9"])
def test_ids_accepted(value):
    assert validate_id(value, field="id") == value


@pytest.mark.parametrize("value", ["", "x" * 256, "mc 1", "mc/1", "mc:1", "mc\n", "mç-1", "mc;DROP"])
def test_ids_refused_naming_field_and_rule_without_echo(value):
    with pytest.raises(InvalidInput) as error:
        validate_id(value, field="controller_id")
    assert error.value.message == "controller_id: must be 1..255 characters of [A-Za-z0-9._-]"
    assert error.value.fields == {"controller_id": ["must be 1..255 characters of [A-Za-z0-9._-]"]}


@pytest.mark.parametrize("value", ["r", "r" * 50, "us-east-1", "EU-West-2"])
def test_regions_accepted(value):
    assert validate_region(value) == value


@pytest.mark.parametrize("value", ["", "r" * 51, "us_east_1", "us.east", "us east"])
def test_regions_refused(value):
    with pytest.raises(InvalidInput, match=r"^region: must be 1\.\.50 characters"):
        validate_region(value)


@pytest.mark.parametrize(
    "value",
    [
        "grpc://mc1.internal:50052", "http://10.0.0.1:80", "https://[::1]:443", "grpc://a:1",
        "https://mc.example.com:443/", "grpc://" + "a" * 63 + ".internal:1",
    ],
)
def test_grpc_endpoints_accepted(value):
    assert validate_endpoint(value, field="grpc_endpoint", schemes=GRPC_SCHEMES) == value


def endpoint_of_length(length: int) -> str:
    prefix, suffix = "grpc://", ":50052"
    host = ".".join(["a" * 50] * 5)[: length - len(prefix) - len(suffix)]
    if host.endswith("."):
        host = host[:-1] + "a"
    return prefix + host + suffix


def test_endpoint_length_edge():
    at_limit, over = endpoint_of_length(255), endpoint_of_length(256)
    assert (len(at_limit), len(over)) == (255, 256)
    assert validate_endpoint(at_limit, field="grpc_endpoint", schemes=GRPC_SCHEMES) == at_limit
    with pytest.raises(InvalidInput, match=r"^grpc_endpoint: "):
        validate_endpoint(over, field="grpc_endpoint", schemes=GRPC_SCHEMES)


@pytest.mark.parametrize(
    "value",
    [
        "", "mc1.internal:50052", "ftp://mc1.internal:21", "grpc://mc1.internal", "grpc://mc1.internal:0",
        "grpc://mc1.internal:70000", "grpc://user:pw@mc1.internal:1", "grpc://mc1.internal:1/path",
        "grpc://mc1.internal:1?q=1", "grpc://mc1.internal:1#f", "grpc://-bad-.internal:1", "grpc://bad_host:1",
        "grpc://" + "a" * 64 + ".internal:1", "grpc://mc 1.internal:1", "grpc://mç.internal:1", "grpc://:50052",
        "grpc://[mc1.internal]:1",
    ],
)
def test_grpc_endpoints_refused(value):
    with pytest.raises(InvalidInput) as error:
        validate_endpoint(value, field="grpc_endpoint", schemes=GRPC_SCHEMES)
    assert error.value.message.startswith("grpc_endpoint: must be a grpc/http/https URL")


def test_webtransport_is_https_only_and_optional_where_allowed():
    assert validate_endpoint("", field="webtransport_endpoint", schemes=WEBTRANSPORT_SCHEMES, required=False) is None
    with pytest.raises(InvalidInput):
        validate_endpoint("", field="webtransport_endpoint", schemes=WEBTRANSPORT_SCHEMES)
    with pytest.raises(InvalidInput, match="must be a https URL"):
        validate_endpoint("grpc://mc.internal:4433", field="webtransport_endpoint", schemes=WEBTRANSPORT_SCHEMES)


def test_capacities_are_refused_never_clamped():
    assert validate_capacity(MAX_CAPACITY, field="max_meetings", minimum=1) == 2**31 - 1
    assert validate_capacity(0, field="current_meetings") == 0
    for value, minimum in ((2**31, 1), (2**32 - 1, 0), (0, 1), (-1, 0)):
        with pytest.raises(InvalidInput, match=f"must be between {minimum} and 2147483647"):
            validate_capacity(value, field="max_meetings", minimum=minimum)


@pytest.mark.parametrize("value", [0.0, 100.0, 55.5])
def test_percentages_accepted(value):
    assert validate_percent(value, field="cpu_usage_percent") == value


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf, -0.01, 100.01, 101.0])
def test_percentages_refused(value):
    with pytest.raises(InvalidInput, match=r"^cpu_usage_percent: must be a finite number between 0 and 100$"):
        validate_percent(value, field="cpu_usage_percent")
