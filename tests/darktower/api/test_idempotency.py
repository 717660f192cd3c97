"""Idempotency-Key on POST: the first response is stored 24 hours and replayed for the same key, principal
and body; a different body is 422; a duplicate still in progress is 409 and never runs twice."""

from __future__ import annotations

import json
import threading
from collections import Counter
from datetime import timedelta

import pytest
from django.conf import settings
from django.db import connection
from django.utils import timezone
from rest_framework.test import APIClient

from accounts.tokens import token_verify
from audit.models import IdempotencyKey
from darktower.api.idempotency import idempotency_begin
from meetings.models import Meeting, MeetingParticipant
from tests.factories import make_controller, make_meeting, make_recording, make_user, user_token
from tests.fixtures.api_errors import assert_error

MEETINGS = "/api/v1/meetings"


def key_header(key):
    return {"HTTP_IDEMPOTENCY_KEY": key}


@pytest.mark.django_db
def test_same_key_and_body_replays_the_first_response(as_user, host):
    client = as_user(host)
    first = client.post(MEETINGS, {"display_name": "Standup"}, format="json", **key_header("k-1"))
    assert first.status_code == 201
    assert "Idempotent-Replayed" not in first
    second = client.post(MEETINGS, {"display_name": "Standup"}, format="json", **key_header("k-1"))
    assert second.status_code == 201
    assert second["Idempotent-Replayed"] == "true"
    assert second.json() == first.json()
    assert Meeting.objects.count() == 1
    row = IdempotencyKey.objects.get(key="k-1")
    assert row.principal == f"user:{host.pk}" and row.state == "completed" and row.response_status == 201
    assert abs((row.expires_at - row.created_at) - timedelta(hours=24)) < timedelta(seconds=1)


@pytest.mark.django_db
def test_same_key_different_body_or_path_is_422(as_user, host):
    client = as_user(host)
    client.post(MEETINGS, {"display_name": "A"}, format="json", **key_header("k-2"))
    assert_error(client.post(MEETINGS, {"display_name": "B"}, format="json", **key_header("k-2")), 422,
                 "idempotency_key_reused")
    meeting = Meeting.objects.get()
    assert_error(client.post(f"{MEETINGS}/{meeting.pk}/end", format="json", **key_header("k-2")), 422,
                 "idempotency_key_reused")
    assert Meeting.objects.get().status == "scheduled"


@pytest.mark.django_db
def test_keys_belong_to_their_principal(as_user, host, other):
    as_user(host).post(MEETINGS, {"display_name": "A"}, format="json", **key_header("shared"))
    response = as_user(other).post(MEETINGS, {"display_name": "A"}, format="json", **key_header("shared"))
    assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert Meeting.objects.count() == 2


@pytest.mark.django_db
def test_an_expired_key_runs_again(as_user, host):
    client = as_user(host)
    client.post(MEETINGS, {"display_name": "A"}, format="json", **key_header("old"))
    IdempotencyKey.objects.filter(key="old").update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.post(MEETINGS, {"display_name": "A"}, format="json", **key_header("old"))
    assert response.status_code == 201 and "Idempotent-Replayed" not in response
    assert Meeting.objects.count() == 2


@pytest.mark.django_db
def test_client_errors_are_stored_and_nothing_is_half_written(as_user, host):
    client = as_user(host)
    meeting = make_meeting(host=host, max_participants=1)
    make_controller(region="us-east-1")
    MeetingParticipant.objects.create(meeting=meeting, participant_id="00000000-0000-0000-0000-000000000001",
                                      display_name="x")
    url = f"{MEETINGS}/{meeting.pk}/join"
    assert_error(client.post(url, {}, format="json", **key_header("join-1")), 409, "conflict")
    MeetingParticipant.objects.all().delete()
    replay = client.post(url, {}, format="json", **key_header("join-1"))
    assert_error(replay, 409, "conflict")
    assert replay["Idempotent-Replayed"] == "true"
    assert not MeetingParticipant.objects.exists()


@pytest.mark.django_db
def test_server_side_failures_are_not_stored(as_user, host):
    client = as_user(host)
    meeting = make_meeting(host=host)
    url = f"{MEETINGS}/{meeting.pk}/join"
    make_controller(region="us-east-1", health="unhealthy")  # a known region with no capacity now: a 503
    assert_error(client.post(url, {}, format="json", **key_header("join-2")), 503, "no_controller_available")
    assert not IdempotencyKey.objects.filter(key="join-2").exists()
    make_controller(region="us-east-1")
    response = client.post(url, {}, format="json", **key_header("join-2"))
    assert response.status_code == 201 and "Idempotent-Replayed" not in response


@pytest.mark.django_db
def test_a_duplicate_in_progress_is_409_and_does_not_run(as_user, host):
    body = b'{"display_name": "A"}'
    idempotency_begin(principal=f"user:{host.pk}", key="busy", method="POST", path=MEETINGS, body=body)
    response = as_user(host).generic("POST", MEETINGS, body, content_type="application/json",
                                     **key_header("busy"))
    assert_error(response, 409, "conflict")
    assert not Meeting.objects.exists()


@pytest.mark.django_db
def test_an_abandoned_claim_is_taken_over(as_user, host):
    body = b'{"display_name": "A"}'
    idempotency_begin(principal=f"user:{host.pk}", key="crashed", method="POST", path=MEETINGS, body=body)
    IdempotencyKey.objects.filter(key="crashed").update(created_at=timezone.now() - timedelta(minutes=10))
    response = as_user(host).generic("POST", MEETINGS, body, content_type="application/json",
                                     **key_header("crashed"))
    assert response.status_code == 201
    assert Meeting.objects.count() == 1


@pytest.mark.django_db
def test_api_key_secrets_are_never_stored_or_replayed(as_user, host):
    client = as_user(host)
    payload = {"name": "ci", "scopes": ["meetings:read"]}
    first = client.post("/api/v1/api-keys", payload, format="json", **key_header("key-1"))
    raw = first.json()["key"]
    assert raw
    replay = client.post("/api/v1/api-keys", payload, format="json", **key_header("key-1"))
    assert replay.status_code == 201 and replay.json()["key"] is None
    assert replay.json()["key_id"] == first.json()["key_id"]
    assert raw not in str(IdempotencyKey.objects.values_list("response_body", flat=True).get(key="key-1"))


def stored_body(key):
    return IdempotencyKey.objects.values_list("response_body", flat=True).get(key=key)


@pytest.mark.django_db
def test_join_replays_store_no_token_and_issue_a_fresh_one(as_user, host, other):
    make_controller(region="us-east-1")
    meeting = make_meeting(host=host)
    client = as_user(other)
    url = f"{MEETINGS}/{meeting.pk}/join"
    first = client.post(url, {}, format="json", **key_header("join-token"))
    assert first.status_code == 201
    token = first.json()["meeting_token"]
    body = stored_body("join-token")
    assert body["meeting_token"] is None and token not in json.dumps(body)

    replay = client.post(url, {}, format="json", **key_header("join-token"))
    assert replay.status_code == 201 and replay["Idempotent-Replayed"] == "true"
    fresh = replay.json()
    assert fresh["participant"] == first.json()["participant"]
    assert fresh["controller_id"] == first.json()["controller_id"]
    assert fresh["meeting_token"] != token and fresh["expires_in"] == 300
    claims = token_verify(fresh["meeting_token"], audience=settings.JWT_MEETING_AUDIENCE).claims
    assert claims["participant_id"] == fresh["participant"]["participant_id"]
    assert claims["role"] == "participant"
    assert MeetingParticipant.objects.filter(meeting=meeting).count() == 1

    # No token for a participant who has left, nor once the meeting has ended.
    MeetingParticipant.objects.filter(meeting=meeting).update(left_at=timezone.now(), leave_reason="voluntary")
    assert_error(client.post(url, {}, format="json", **key_header("join-token")), 409, "conflict")
    Meeting.objects.filter(pk=meeting.pk).update(status="ended", ended_at=timezone.now())
    assert_error(client.post(url, {}, format="json", **key_header("join-token")), 410, "gone")


@pytest.mark.django_db
def test_guests_are_keyed_by_address_and_name(api, host):
    make_controller(region="us-east-1")
    meeting = make_meeting(host=host, allow_guests=True)
    url = f"{MEETINGS}/{meeting.pk}/guest-token"
    first = api.post(url, {"display_name": "Ann"}, format="json", **key_header("guest-1"))
    again = api.post(url, {"display_name": "Ann"}, format="json", **key_header("guest-1"))
    assert first.status_code == again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"
    assert again.json()["participant"] == first.json()["participant"]
    assert again.json()["meeting_token"] != first.json()["meeting_token"]
    assert token_verify(again.json()["meeting_token"], audience=settings.JWT_MEETING_AUDIENCE).claims["role"] == "guest"
    assert stored_body("guest-1")["meeting_token"] is None

    # Another guest behind the same address who happens to send the same key is a new guest, not a replay of
    # Ann's participant (nor a 422 for "the same key with another body").
    bob = api.post(url, {"display_name": "Bob"}, format="json", **key_header("guest-1"))
    assert bob.status_code == 201 and "Idempotent-Replayed" not in bob
    assert bob.json()["participant"]["participant_id"] != first.json()["participant"]["participant_id"]
    assert MeetingParticipant.objects.count() == 2
    principals = set(IdempotencyKey.objects.filter(key="guest-1").values_list("principal", flat=True))
    assert len(principals) == 2
    assert all(principal.startswith("guest:127.0.0.1:") and "Ann" not in principal for principal in principals)


@pytest.mark.django_db
def test_share_replays_store_no_token_and_answer_the_same_share(as_user, host):
    recording = make_recording(meeting=make_meeting(host=host), status="ready")
    client = as_user(host)
    url = f"/api/v1/recordings/{recording.pk}/share"
    first = client.post(url, format="json", **key_header("share-1"))
    token = first.json()["access_token"]
    assert first.status_code == 200 and token
    assert stored_body("share-1")["access_token"] is None and token not in json.dumps(stored_body("share-1"))
    replay = client.post(url, format="json", **key_header("share-1"))
    assert replay["Idempotent-Replayed"] == "true"
    # The same share; its token is shown once (only its hash is kept), so the replay cannot answer it.
    assert replay.json() == {**first.json(), "access_token": None, "share_url": None}
    # A link taken down since is not handed out again.
    client.post(f"/api/v1/recordings/{recording.pk}/unshare", format="json")
    assert client.post(url, format="json", **key_header("share-1")).json()["access_token"] is None


@pytest.mark.django_db
@pytest.mark.parametrize("key", ["", "x" * 256, "naïve", "has space"])
def test_invalid_keys_are_400(as_user, host, key):
    error = assert_error(as_user(host).post(MEETINGS, {"display_name": "A"}, format="json", **key_header(key)),
                         400, "invalid")
    assert "Idempotency-Key" in error["fields"]
    assert not Meeting.objects.exists()


@pytest.mark.django_db
def test_login_does_not_store_tokens(api):
    user = make_user()
    for _ in range(2):
        response = api.post("/api/v1/auth/login", {"email": user.email, "password": "correct-horse-battery"},
                            format="json", **key_header("login-1"))
        assert response.status_code == 200 and "Idempotent-Replayed" not in response
    assert not IdempotencyKey.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_concurrent_duplicates_execute_once():
    host = make_user()
    token = user_token(host)
    barrier = threading.Barrier(8)
    results = []

    def post():
        try:
            client = APIClient()
            client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
            barrier.wait(timeout=30)
            response = client.post(MEETINGS, {"display_name": "Once"}, format="json", **key_header("race"))
            results.append((response.status_code, response.json()))
        finally:
            connection.close()

    threads = [threading.Thread(target=post) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(results) == 8
    assert Meeting.objects.count() == 1
    statuses = Counter(status for status, _ in results)
    assert set(statuses) <= {201, 409}, statuses
    created = [body for status, body in results if status == 201]
    assert created and all(body["meeting_id"] == str(Meeting.objects.get().pk) for body in created)
    assert IdempotencyKey.objects.get(key="race").state == "completed"
