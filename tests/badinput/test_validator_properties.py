"""Property tests for every validator of what MCs, MHs and API clients send (controllers/validation.py, the
Idempotency-Key header, the REST request serializers).

For any input: a valid one is accepted unchanged; anything else is refused with InvalidInput (or a DRF
ValidationError) naming the field; no other exception, ever.
"""

from __future__ import annotations

import ipaddress
import math
import string
import uuid

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from controllers.validation import (
    ENDPOINT_MAX_LENGTH,
    GRPC_SCHEMES,
    ID_MAX_LENGTH,
    MAX_CAPACITY,
    REGION_MAX_LENGTH,
    WEBTRANSPORT_SCHEMES,
    validate_capacity,
    validate_endpoint,
    validate_id,
    validate_percent,
    validate_region,
    validate_uuid,
)
from darktower.api.idempotency import HEADER, MAX_KEY_LENGTH, validate_key
from darktower.errors import InvalidInput
from meetings.api.serializers import JoinRequest, MeetingCreateRequest

PROPERTIES = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])

ID_CHARS = string.ascii_letters + string.digits + "._-"
REGION_CHARS = string.ascii_letters + string.digits + "-"
# Text that is mostly near the rules: their own alphabet, separators, control and non-ASCII characters.
NEAR_TEXT = st.text(alphabet=st.sampled_from(ID_CHARS + " /:@[]%?#\x00\n\t\u00e7\u0661\uff10"), max_size=300)
ANY_TEXT = st.one_of(NEAR_TEXT, st.text(max_size=300))


def _refused(call, field: str) -> InvalidInput:
    with pytest.raises(InvalidInput) as error:
        call()
    assert set(error.value.fields) == {field}, error.value.fields
    assert error.value.message.startswith(f"{field}: ")
    return error.value


def _accepted_or_refused(call, field: str):
    """The validator's result, or None when it refused naming `field`. Any other exception fails the test."""
    try:
        return call()
    except InvalidInput as error:
        assert set(error.fields) == {field}, error.fields
        return None


# --- ids and regions: an exact oracle --------------------------------------------------------------------


@PROPERTIES
@given(st.text(alphabet=ID_CHARS, min_size=1, max_size=ID_MAX_LENGTH))
def test_valid_ids_are_accepted(value):
    assert validate_id(value, field="controller_id") == value


@PROPERTIES
@given(ANY_TEXT)
def test_ids_are_accepted_exactly_when_they_follow_the_rule(value):
    valid = 1 <= len(value) <= ID_MAX_LENGTH and all(char in ID_CHARS for char in value)
    result = _accepted_or_refused(lambda: validate_id(value, field="handler_id"), "handler_id")
    assert (result == value) if valid else result is None


@PROPERTIES
@given(st.text(alphabet=REGION_CHARS, min_size=1, max_size=REGION_MAX_LENGTH))
def test_valid_regions_are_accepted(value):
    assert validate_region(value) == value


@PROPERTIES
@given(ANY_TEXT)
def test_regions_are_accepted_exactly_when_they_follow_the_rule(value):
    valid = 1 <= len(value) <= REGION_MAX_LENGTH and all(char in REGION_CHARS for char in value)
    result = _accepted_or_refused(lambda: validate_region(value), "region")
    assert (result == value) if valid else result is None


# --- endpoints ---------------------------------------------------------------------------------------------

LABEL = st.from_regex(r"[A-Za-z0-9]([A-Za-z0-9-]{0,20}[A-Za-z0-9])?", fullmatch=True)
DNS_NAME = st.lists(LABEL, min_size=1, max_size=4).map(".".join)
IPV4 = st.ip_addresses(v=4).map(str)
IPV6 = st.ip_addresses(v=6).map(lambda address: f"[{address}]")
PORT = st.integers(min_value=1, max_value=65535)


@PROPERTIES
@given(scheme=st.sampled_from(sorted(GRPC_SCHEMES)), host=st.one_of(DNS_NAME, IPV4, IPV6), port=PORT,
       slash=st.booleans())
def test_valid_endpoints_are_accepted(scheme, host, port, slash):
    value = f"{scheme}://{host}:{port}" + ("/" if slash else "")
    assert validate_endpoint(value, field="grpc_endpoint", schemes=GRPC_SCHEMES) == value


@PROPERTIES
@given(value=st.one_of(
    ANY_TEXT,
    st.builds(lambda scheme, rest: f"{scheme}://{rest}", st.sampled_from(["https", "grpc", "ftp", ""]), ANY_TEXT),
), required=st.booleans())
def test_any_endpoint_is_accepted_only_when_well_formed(value, required):
    result = _accepted_or_refused(
        lambda: validate_endpoint(value, field="webtransport_endpoint", schemes=WEBTRANSPORT_SCHEMES,
                                  required=required),
        "webtransport_endpoint",
    )
    if result is None and not value and not required:
        return  # optional and absent
    if result is not None:
        assert result == value
        assert value.startswith("https://") and value.isascii() and len(value) <= ENDPOINT_MAX_LENGTH
        assert not any(char in value for char in " @?#\x00\n")
        host_port = value.removeprefix("https://").removesuffix("/")
        host, _, port = host_port.rpartition(":")
        assert 1 <= int(port) <= 65535
        if host.startswith("["):
            ipaddress.IPv6Address(host[1:-1])


@PROPERTIES
@given(st.one_of(DNS_NAME, IPV4), PORT)
def test_endpoints_of_another_scheme_are_refused(host, port):
    _refused(lambda: validate_endpoint(f"grpc://{host}:{port}", field="webtransport_endpoint",
                                       schemes=WEBTRANSPORT_SCHEMES), "webtransport_endpoint")


# --- numbers -----------------------------------------------------------------------------------------------


@PROPERTIES
@given(value=st.integers(), minimum=st.sampled_from([0, 1]))
def test_capacities_are_accepted_exactly_within_their_bounds(value, minimum):
    result = _accepted_or_refused(lambda: validate_capacity(value, field="max_meetings", minimum=minimum),
                                  "max_meetings")
    assert (result == value) if minimum <= value <= MAX_CAPACITY else result is None


@PROPERTIES
@given(st.floats(allow_nan=True, allow_infinity=True, width=64))
def test_percentages_are_accepted_exactly_when_finite_within_0_and_100(value):
    result = _accepted_or_refused(lambda: validate_percent(value, field="cpu_usage_percent"), "cpu_usage_percent")
    valid = math.isfinite(value) and 0.0 <= value <= 100.0
    assert (result == value) if valid else result is None


@PROPERTIES
@given(st.uuids())
def test_uuids_in_any_usual_spelling_are_accepted(value):
    for spelling in (str(value), str(value).upper(), value.hex, f"{{{value}}}", value.urn):
        assert validate_uuid(spelling, field="meeting_id") == value


@PROPERTIES
@given(ANY_TEXT)
def test_anything_else_is_not_a_uuid(value):
    try:
        expected = uuid.UUID(value)
    except ValueError:
        expected = None
    assume(expected is None)
    _refused(lambda: validate_uuid(value, field="meeting_id"), "meeting_id")


# --- the Idempotency-Key header ----------------------------------------------------------------------------


@PROPERTIES
@given(st.text(max_size=MAX_KEY_LENGTH + 20))
def test_idempotency_keys_are_accepted_exactly_when_visible_ascii_and_short(value):
    valid = 1 <= len(value) <= MAX_KEY_LENGTH and all("!" <= char <= "~" for char in value)
    result = _accepted_or_refused(lambda: validate_key(value), HEADER)
    assert (result == value) if valid else result is None


# --- REST request bodies -----------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=300),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=20), children, max_size=3),
    max_leaves=8,
)
MEETING_FIELDS = ["display_name", "max_participants", "enable_e2e_encryption", "require_auth", "allow_recording",
                  "waiting_room_enabled", "allow_guests", "scheduled_start_time"]


@PROPERTIES
@given(st.one_of(
    JSON,
    st.dictionaries(st.sampled_from([*MEETING_FIELDS, "unknown", "id"]), JSON, max_size=5),
))
def test_meeting_bodies_are_valid_or_refused_by_field(body):
    serializer = MeetingCreateRequest(data=body)
    if serializer.is_valid():
        assert isinstance(body, dict) and set(body) <= set(MEETING_FIELDS)
        assert isinstance(serializer.validated_data["display_name"], str)
    else:
        assert serializer.errors
        if isinstance(body, dict):
            assert set(serializer.errors) <= {*body, "display_name", "non_field_errors"}, serializer.errors


@PROPERTIES
@given(st.text(st.characters(exclude_categories=("Cc", "Cs")), min_size=1, max_size=255).filter(str.strip),
       st.integers(min_value=1, max_value=1000),
       st.booleans())
def test_valid_meeting_bodies_are_accepted(name, max_participants, flag):
    serializer = MeetingCreateRequest(data={"display_name": name, "max_participants": max_participants,
                                            "allow_guests": flag})
    assert serializer.is_valid(), serializer.errors


@PROPERTIES
@given(st.dictionaries(st.sampled_from(["region", "display_name", "client_version", "other"]), JSON, max_size=4))
def test_join_bodies_are_valid_or_refused_by_field(body):
    serializer = JoinRequest(data=body)
    if serializer.is_valid():
        region = serializer.validated_data["region"]
        assert region and len(region) <= 50 and region[0] in string.ascii_lowercase + string.digits
        assert set(region) <= set(string.ascii_lowercase + string.digits + "-")
    else:
        assert set(serializer.errors) <= {*body, "non_field_errors"}, serializer.errors
