"""Reads with a viewer check raise the domain errors every door maps the same way."""

from __future__ import annotations

import uuid

import pytest

from darktower.errors import NotFound, PermissionDenied
from meetings import selectors
from meetings.models import MeetingParticipant
from tests.factories import make_meeting, make_recording

pytestmark = pytest.mark.django_db


def test_a_ref_with_nul_matches_nothing_without_a_query(host, django_assert_num_queries):
    meeting = make_meeting(host=host, meeting_code="abc-defg-hjk")
    with django_assert_num_queries(0):
        assert list(selectors.meetings_by_ref("abc\x00defg-hjk")) == []
    assert selectors.meetings_by_ref(" ABC-DEFG-HJK ").get() == meeting
    assert selectors.meetings_by_ref(str(meeting.pk)).get() == meeting


def test_participants_for_the_host_and_participants_only(host, other):
    meeting = make_meeting(host=host)
    with pytest.raises(NotFound):
        selectors.participants_for_meeting(meeting_id=uuid.uuid4(), viewer_id=host.pk)
    with pytest.raises(PermissionDenied):
        selectors.participants_for_meeting(meeting_id=meeting.pk, viewer_id=other.pk)
    MeetingParticipant.objects.create(meeting=meeting, participant_id=uuid.uuid4(), user=other, display_name="O")
    assert selectors.participants_for_meeting(meeting_id=meeting.pk, viewer_id=other.pk).count() == 1
    assert selectors.participants_for_meeting(meeting_id=meeting.pk, viewer_id=host.pk).count() == 1


def test_recordings_for_the_host_only(host, other):
    meeting = make_meeting(host=host)
    recording = make_recording(meeting=meeting)
    assert list(selectors.recordings_visible_to(meeting_id=meeting.pk, viewer_id=host.pk)) == [recording]
    assert selectors.recording_visible_to(recording_id=recording.pk, viewer_id=host.pk) == recording
    with pytest.raises(PermissionDenied):
        selectors.recordings_visible_to(meeting_id=meeting.pk, viewer_id=other.pk)
    with pytest.raises(PermissionDenied):
        selectors.recording_visible_to(recording_id=recording.pk, viewer_id=other.pk)
    with pytest.raises(NotFound):
        selectors.recordings_visible_to(meeting_id=uuid.uuid4(), viewer_id=host.pk)
    with pytest.raises(NotFound):
        selectors.recording_visible_to(recording_id=uuid.uuid4(), viewer_id=host.pk)
