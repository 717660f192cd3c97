"""The join's request validation and answer without serializers (meetings/api/join.py) say exactly what the
serializers JoinRequest, GuestTokenRequest and JoinResponse say: the same validated data or the same field errors
for any body, the same 400 to the byte, the same answer to the byte."""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework import serializers
from rest_framework.renderers import JSONRenderer

from accounts.tokens import IssuedToken
from controllers.mc_client import MediaHandlerChoice
from darktower.api.errors import error_body, flatten_fields
from meetings.api.join import join_answer, join_request
from meetings.api.serializers import GuestTokenRequest, JoinRequest, JoinResponse, meeting_for_joiner
from meetings.models import LeaveReason, MeetingParticipant, MeetingStatus
from meetings.services.assignment import Assignment
from meetings.services.participants import ROLE_HOST, JoinResult, meeting_join, participants_close
from tests.factories import make_meeting, make_user

REGION = "us-east-1"
PROPERTIES = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# Text near the rules: the region alphabet, upper case, whitespace, NUL, a lone surrogate, non-ASCII.
NEAR = st.text(alphabet=st.sampled_from("az09-_ A\t\n\x00\ud800\u00e7\u2003"), max_size=60)
VALUE = st.one_of(
    NEAR, st.text(max_size=300), st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2), st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["us-east-1", " eu-west-1 ", "", "   ", "x" * 51, "n" * 256, "Us-East-1", "-a"]),
)
BODY = st.dictionaries(st.sampled_from(["region", "display_name", "client_version", "other", "Region"]), VALUE,
                       max_size=4)

# Bodies the 400 is compared byte for byte on, through the real view and exception handler. NUL and lone
# surrogates are left to the property test: a NUL anywhere in a body is refused before any view (malformed
# request), and the test client cannot send a lone surrogate.
BAD_BODIES = [
    {"region": ""}, {"region": "   "}, {"region": None}, {"region": 5}, {"region": True}, {"region": ["us"]},
    {"region": "US-EAST-1"}, {"region": "-x"}, {"region": "a" * 51}, {"region": "A" * 51},
    {"region": "A_" + "b" * 60}, {"region": " \u00e7 "}, {"display_name": "x" * 256},
    {"display_name": ""}, {"display_name": {"a": 1}}, {"client_version": 1.5}, {"client_version": "v" * 51},
    {"region": "", "display_name": None, "client_version": 3}, {"unknown": 1}, {"zeta": 1, "alpha": 2},
    {"region": "", "extra": 1}, {"display_name": "ok"},
]


def _serializer_result(body, *, guest):
    serializer = (GuestTokenRequest if guest else JoinRequest)(data=body)
    if serializer.is_valid():
        return dict(serializer.validated_data), None
    return None, {name: [str(message) for message in messages] for name, messages in serializer.errors.items()}


def _plain_result(body, *, guest):
    try:
        return join_request(body, guest=guest), None
    except serializers.ValidationError as refused:
        return None, {name: [str(message) for message in messages] for name, messages in refused.detail.items()}


@PROPERTIES
@given(BODY, st.booleans())
def test_any_json_object_gets_the_serializers_data_or_errors(body, guest):
    assert _plain_result(body, guest=guest) == _serializer_result(body, guest=guest)


@pytest.mark.parametrize("guest", [False, True])
def test_the_default_region_and_trimmed_values(guest, settings):
    settings.DEFAULT_REGION = "eu-west-1"
    body = {"display_name": "  Ann  ", "client_version": "\t1.2 "}
    assert join_request(body, guest=guest) == _serializer_result(body, guest=guest)[0] == {
        "region": "eu-west-1", "display_name": "Ann", "client_version": "1.2",
    }


@pytest.mark.parametrize("body", [[], "region", 3, None, [{"region": "us-east-1"}]])
def test_a_body_that_is_no_object_is_refused_as_the_serializer_does(body):
    assert _plain_result(body, guest=False) == _serializer_result(body, guest=False)


def _expected_400(body, *, guest) -> bytes:
    _, errors = _serializer_result(body, guest=guest)
    assert errors is not None, body
    return JSONRenderer().render(error_body("invalid", "The request is invalid; see fields.", flatten_fields(errors)))


@pytest.mark.django_db
@pytest.mark.parametrize("body", BAD_BODIES)
def test_a_refused_join_answers_the_serializers_400_to_the_byte(body, as_user, api, host, other, controller):
    meeting = make_meeting(host=host, allow_guests=True, require_auth=False)
    if body != {"display_name": "ok"}:  # valid for a member: joins
        response = as_user(other).post(f"/api/v1/meetings/{meeting.pk}/join", body, format="json")
        assert response.status_code == 400
        assert response.content == _expected_400(body, guest=False)
    guest = api.post(f"/api/v1/meetings/{meeting.pk}/guest-token", body, format="json")
    if body == {"display_name": "ok"}:
        assert guest.status_code == 201, guest.content
        return
    assert guest.status_code == 400
    assert guest.content == _expected_400(body, guest=True)


def _serializer_answer(result: JoinResult) -> dict:
    """The answer as the JoinResponse serializer renders it."""
    body = {
        "meeting": result.meeting, "participant": result.participant,
        "controller_id": result.assignment.controller_id, "region": result.assignment.region,
        "grpc_endpoint": result.assignment.grpc_endpoint,
        "webtransport_endpoint": result.assignment.webtransport_endpoint,
        "media_handlers": [dataclasses.asdict(handler) for handler in result.assignment.media_handlers],
        "meeting_token": result.token.token, "token_type": "Bearer", "expires_in": result.token.expires_in,
    }
    data = JoinResponse().to_representation(body)
    if result.participant.role != ROLE_HOST:
        data["meeting"] = meeting_for_joiner(data["meeting"])
    return data


def _assert_same_answer(result: JoinResult) -> None:
    plain, reference = join_answer(result), _serializer_answer(result)
    assert plain == reference
    assert JSONRenderer().render(plain) == JSONRenderer().render(reference)


@pytest.mark.django_db
def test_the_answer_of_real_joins_is_the_serializers(host, other, controller):
    meeting = make_meeting(host=host, allow_guests=True, require_auth=False, waiting_room_enabled=True,
                           scheduled_start_time=datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC))
    for user in (host, other, None, other):  # host, participant, a waiting guest, a rejoin (200)
        result = meeting_join(meeting_ref=meeting.meeting_code, region=REGION, user=user,
                              display_name=None if user else "Guest Ann", ip_address="192.0.2.7")
        _assert_same_answer(result)


@pytest.mark.django_db
def test_the_answer_with_every_nullable_field_set_or_empty_is_the_serializers(host, controller):
    meeting = make_meeting(host=host)
    joined = meeting_join(meeting_ref=str(meeting.pk), region=REGION, user=make_user())
    participants_close(meeting_id=meeting.pk, leave_reason=LeaveReason.VOLUNTARY)
    left = MeetingParticipant.objects.get(pk=joined.participant.pk)
    assert left.left_at is not None and left.leave_reason == LeaveReason.VOLUNTARY
    meeting.refresh_from_db()
    meeting.status, meeting.ended_at = MeetingStatus.ENDED, datetime(2031, 5, 6, 7, 8, 9, tzinfo=UTC)
    meeting.scheduled_start_time = datetime(2030, 1, 1, 12, tzinfo=UTC) + timedelta(microseconds=1)
    handlers = (MediaHandlerChoice("mh-1", "https://mh-1:4434", "http://mh-1:50053"),
                MediaHandlerChoice("mh-2", "", ""))
    assignment = Assignment(7, meeting.pk, REGION, "mc-x", "grpc://mc-x:50052", None, reused=False,
                            media_handlers=handlers)
    token = IssuedToken(token="t.o.k", jti=str(uuid.uuid4()), expires_at=datetime.now(UTC), expires_in=300, scope="")
    for participant in (left, joined.participant):
        for role in ("participant", ROLE_HOST):
            participant.role = role
            _assert_same_answer(JoinResult(meeting=meeting, participant=participant, assignment=assignment,
                                           token=token, created=False))
    # A meeting whose host was erased, a guest's participant (no user).
    guest = joined.participant
    guest.user_id, guest.role = None, "guest"
    _assert_same_answer(JoinResult(meeting=make_meeting(host=None), participant=guest, assignment=assignment,
                                   token=token))
