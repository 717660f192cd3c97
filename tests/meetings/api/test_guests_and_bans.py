"""The host's control over who is in a meeting: a kick bans until the host lifts the ban, the waiting room
(guests, and users when the meeting says so, wait without a seat until admitted or denied), a cap on guest seats
and a lock. Over REST, end to end."""

from __future__ import annotations

import pytest
from django.conf import settings

from accounts.tokens import token_verify
from audit.models import AuditLog, OutboxEvent
from meetings.models import Meeting, MeetingBan, MeetingParticipant
from tests.factories import make_meeting, make_user
from tests.fixtures.api_errors import assert_error

pytestmark = pytest.mark.django_db

MEETINGS = "/api/v1/meetings"
GUEST_A, GUEST_B = "192.0.2.10", "192.0.2.20"


def join(client, meeting, **extra):
    return client.post(f"{MEETINGS}/{meeting.pk}/join", {}, format="json", **extra)


def guest_join(api, meeting, name="Visitor", address=GUEST_A):
    return api.post(f"{MEETINGS}/{meeting.pk}/guest-token", {"display_name": name}, format="json",
                    REMOTE_ADDR=address)


def kick(client, meeting, participant_id):
    return client.post(f"{MEETINGS}/{meeting.pk}/participants/{participant_id}/leave",
                       {"leave_reason": "kicked"}, format="json")


def action(client, meeting, participant_id, verb, body=None):
    return client.post(f"{MEETINGS}/{meeting.pk}/participants/{participant_id}/{verb}", body or {}, format="json")


def claims(response):
    return token_verify(response.json()["meeting_token"], audience=settings.JWT_MEETING_AUDIENCE).claims


# --- Kick bans -------------------------------------------------------------------------------------


def test_a_kicked_user_cannot_rejoin_until_the_host_lifts_the_ban(as_user, host, other, controller):
    meeting = make_meeting(host=host)
    joined = join(as_user(other), meeting)
    assert joined.status_code == 201
    participant_id = joined.json()["participant"]["participant_id"]
    assert kick(as_user(host), meeting, participant_id).status_code == 200

    error = assert_error(join(as_user(other), meeting), 403, "permission_denied")
    assert "removed" in error["message"]
    assert MeetingParticipant.objects.filter(meeting=meeting, user=other, left_at__isnull=True).count() == 0

    bans = as_user(host).get(f"{MEETINGS}/{meeting.pk}/bans")
    assert bans.status_code == 200
    [ban] = bans.json()["results"]
    assert ban["kind"] == "user" and ban["user_id"] == str(other.pk)
    assert ban["participant_id"] == participant_id and ban["display_name"] == other.display_name
    assert set(ban) == {"ban_id", "kind", "user_id", "participant_id", "display_name", "banned_at"}
    assert AuditLog.objects.filter(event_type="participant_banned", target_id=str(meeting.pk)).count() == 1

    # Only the host reads or lifts bans.
    assert_error(as_user(other).get(f"{MEETINGS}/{meeting.pk}/bans"), 403, "permission_denied")
    assert_error(as_user(other).delete(f"{MEETINGS}/{meeting.pk}/bans/{ban['ban_id']}"), 403, "permission_denied")

    assert as_user(host).delete(f"{MEETINGS}/{meeting.pk}/bans/{ban['ban_id']}").status_code == 204
    assert_error(as_user(host).delete(f"{MEETINGS}/{meeting.pk}/bans/{ban['ban_id']}"), 404, "not_found")
    assert AuditLog.objects.filter(event_type="participant_ban_lifted", target_id=str(meeting.pk)).count() == 1
    assert join(as_user(other), meeting).status_code == 201


def test_a_ban_holds_in_that_meeting_only(as_user, host, other, controller):
    meeting, elsewhere = make_meeting(host=host), make_meeting(host=host)
    joined = join(as_user(other), meeting).json()
    kick(as_user(host), meeting, joined["participant"]["participant_id"])
    assert join(as_user(other), elsewhere).status_code == 201


def test_a_kicked_guest_cannot_rejoin_from_its_address_under_another_name(api, as_user, host, controller):
    meeting = make_meeting(host=host, allow_guests=True)
    joined = guest_join(api, meeting, "Heckler", GUEST_A)
    assert joined.status_code == 201
    kick(as_user(host), meeting, joined.json()["participant"]["participant_id"])

    assert_error(guest_join(api, meeting, "Heckler", GUEST_A), 403, "permission_denied")
    assert_error(guest_join(api, meeting, "Someone else", GUEST_A), 403, "permission_denied")
    assert guest_join(api, meeting, "Visitor", GUEST_B).status_code == 201

    [ban] = as_user(host).get(f"{MEETINGS}/{meeting.pk}/bans").json()["results"]
    assert ban["kind"] == "guest" and ban["user_id"] is None and ban["display_name"] == "Heckler"
    assert GUEST_A not in str(ban)  # the host sees who, never the guest's address
    assert MeetingBan.objects.get(pk=ban["ban_id"]).principal == f"guest:{GUEST_A}"


def test_leaving_voluntarily_and_the_host_removing_itself_ban_nobody(as_user, host, other, controller):
    meeting = make_meeting(host=host)
    mine = join(as_user(other), meeting).json()["participant"]["participant_id"]
    own = join(as_user(host), meeting).json()["participant"]["participant_id"]
    leave = f"{MEETINGS}/{meeting.pk}/participants/{mine}/leave"
    assert as_user(other).post(leave, {}, format="json").status_code == 200
    assert kick(as_user(host), meeting, own).status_code == 200
    assert not MeetingBan.objects.exists()
    assert join(as_user(other), meeting).status_code == 201
    assert join(as_user(host), meeting).status_code == 201


# --- Guest seats and the lock ---------------------------------------------------------------------


def test_guests_cannot_take_more_than_the_guest_seats(api, as_user, host, other, controller):
    meeting = make_meeting(host=host, allow_guests=True, max_participants=3, max_guests=2)
    assert [guest_join(api, meeting, f"G{n}", f"192.0.2.{n}").status_code for n in (1, 2)] == [201, 201]
    error = assert_error(guest_join(api, meeting, "G3", "192.0.2.3"), 409, "conflict")
    assert "guest" in error["message"]
    # The third seat is still there for a signed-in user.
    assert join(as_user(other), meeting).status_code == 201
    assert MeetingParticipant.objects.filter(meeting=meeting, role="guest").count() == 2


def test_the_guest_seats_default_and_validation(as_user, host):
    created = as_user(host).post(MEETINGS, {"display_name": "m"}, format="json")
    assert created.status_code == 201
    body = created.json()
    assert body["max_guests"] == 10 and body["locked"] is False and body["waiting_room_applies_to_users"] is False
    url = f"{MEETINGS}/{body['meeting_id']}"
    for bad in (-1, 1001, "3", 2.5, None, True):
        error = assert_error(as_user(host).patch(url, {"max_guests": bad}, format="json"), 400, "invalid")
        assert "max_guests" in error["fields"]
    assert as_user(host).patch(url, {"max_guests": 0}, format="json").json()["max_guests"] == 0


def test_no_guest_seat_at_all(api, host, controller):
    meeting = make_meeting(host=host, allow_guests=True, max_guests=0)
    assert_error(guest_join(api, meeting), 409, "conflict")


def test_a_locked_meeting_admits_nobody_new_but_the_host(api, as_user, host, other, controller):
    meeting = make_meeting(host=host, allow_guests=True)
    present = make_user()
    assert join(as_user(present), meeting).status_code == 201
    locked = as_user(host).patch(f"{MEETINGS}/{meeting.pk}", {"locked": True}, format="json")
    assert locked.status_code == 200 and locked.json()["locked"] is True
    assert AuditLog.objects.filter(event_type="meeting_updated", metadata__fields=["locked"]).count() == 1

    assert "locked" in assert_error(join(as_user(other), meeting), 403, "permission_denied")["message"]
    assert_error(guest_join(api, meeting), 403, "permission_denied")
    assert join(as_user(present), meeting).status_code == 200  # still present: a reload, not a new join
    assert join(as_user(host), meeting).status_code == 201

    assert as_user(host).patch(f"{MEETINGS}/{meeting.pk}", {"locked": False}, format="json").status_code == 200
    assert join(as_user(other), meeting).status_code == 201


def test_only_the_host_locks(as_user, host, other):
    meeting = make_meeting(host=host)
    assert_error(as_user(other).patch(f"{MEETINGS}/{meeting.pk}", {"locked": True}, format="json"),
                 403, "permission_denied")
    assert Meeting.objects.get(pk=meeting.pk).locked is False


# --- The waiting room ------------------------------------------------------------------------------


def test_guests_wait_without_a_seat_until_the_host_admits_them(api, as_user, host, other, controller):
    meeting = make_meeting(host=host, allow_guests=True, waiting_room_enabled=True, max_participants=2)
    waiting = []
    for number in range(3):  # three guests, two seats: waiting takes none
        response = guest_join(api, meeting, f"G{number}", f"192.0.2.{number + 1}")
        assert response.status_code == 201, response.content
        assert response.json()["participant"]["status"] == "waiting"
        assert claims(response)["waiting_room"] is True
        waiting.append(response.json()["participant"]["participant_id"])
    user = join(as_user(other), meeting)  # users do not wait unless the meeting says so
    assert user.status_code == 201 and user.json()["participant"]["status"] == "admitted"
    assert claims(user)["waiting_room"] is False

    listed = as_user(host).get(f"{MEETINGS}/{meeting.pk}/waiting")
    assert listed.status_code == 200
    assert [p["participant_id"] for p in listed.json()["results"]] == waiting
    assert_error(as_user(other).get(f"{MEETINGS}/{meeting.pk}/waiting"), 403, "permission_denied")
    assert_error(action(as_user(other), meeting, waiting[0], "admit"), 403, "permission_denied")

    admitted = action(as_user(host), meeting, waiting[0], "admit")
    assert admitted.status_code == 200 and admitted.json()["status"] == "admitted"
    assert OutboxEvent.objects.filter(event_type="participant_admitted").count() == 1
    assert AuditLog.objects.filter(event_type="participant_admitted", target_id=str(meeting.pk)).count() == 1
    assert_error(action(as_user(host), meeting, waiting[0], "admit"), 409, "conflict")  # not waiting any more
    # Two seats, both taken now (the user and the admitted guest).
    assert "full" in assert_error(action(as_user(host), meeting, waiting[1], "admit"), 409, "conflict")["message"]

    denied = action(as_user(host), meeting, waiting[1], "deny")
    assert denied.status_code == 200
    assert denied.json()["leave_reason"] == "denied" and denied.json()["left_at"]
    assert OutboxEvent.objects.filter(event_type="participant_denied").count() == 1
    # Denied is not banned: that guest may knock again.
    assert not MeetingBan.objects.exists()
    assert guest_join(api, meeting, "G1", "192.0.2.2").json()["participant"]["status"] == "waiting"

    # Deny with a ban.
    assert action(as_user(host), meeting, waiting[2], "deny", {"ban": True}).status_code == 200
    assert MeetingBan.objects.get().principal == "guest:192.0.2.3"
    assert_error(guest_join(api, meeting, "G2", "192.0.2.3"), 403, "permission_denied")
    assert_error(action(as_user(host), meeting, waiting[2], "deny", {"ban": "yes"}), 400, "invalid")


def test_the_waiting_room_holds_users_when_the_meeting_says_so_but_never_the_host(as_user, host, other, controller):
    meeting = make_meeting(host=host, waiting_room_enabled=True, waiting_room_applies_to_users=True)
    user = join(as_user(other), meeting)
    assert user.json()["participant"]["status"] == "waiting" and claims(user)["waiting_room"] is True
    again = join(as_user(other), meeting)  # a reload while waiting: the same participant, still waiting
    assert again.status_code == 200 and again.json()["participant"]["status"] == "waiting"
    own = join(as_user(host), meeting)
    assert own.json()["participant"]["status"] == "admitted" and claims(own)["waiting_room"] is False


def test_admitting_a_guest_respects_the_guest_seats(api, as_user, host, controller):
    meeting = make_meeting(host=host, allow_guests=True, waiting_room_enabled=True, max_guests=1)
    first, second = (guest_join(api, meeting, name, address).json()["participant"]["participant_id"]
                     for name, address in (("A", GUEST_A), ("B", GUEST_B)))
    assert action(as_user(host), meeting, first, "admit").status_code == 200
    assert "guest" in assert_error(action(as_user(host), meeting, second, "admit"), 409, "conflict")["message"]


def test_admit_and_deny_of_unknown_participants(as_user, host, other, controller):
    meeting = make_meeting(host=host, waiting_room_enabled=True)
    present = join(as_user(other), meeting).json()["participant"]["participant_id"]  # admitted: users don't wait
    assert_error(action(as_user(host), meeting, "00000000-0000-0000-0000-000000000000", "admit"), 404, "not_found")
    assert_error(action(as_user(host), meeting, present, "deny"), 409, "conflict")


def test_an_admitted_guest_gets_a_token_without_the_waiting_room_by_replaying_its_join(api, as_user, host, controller):
    # A guest cannot sign in to join again: the replay of its own Idempotency-Key reissues its token, which says
    # what the participant is now.
    meeting = make_meeting(host=host, allow_guests=True, waiting_room_enabled=True)
    url = f"{MEETINGS}/{meeting.pk}/guest-token"
    first = api.post(url, {"display_name": "G"}, format="json", HTTP_IDEMPOTENCY_KEY="knock-1")
    assert claims(first)["waiting_room"] is True
    action(as_user(host), meeting, first.json()["participant"]["participant_id"], "admit")
    again = api.post(url, {"display_name": "G"}, format="json", HTTP_IDEMPOTENCY_KEY="knock-1")
    assert again["Idempotent-Replayed"] == "true"
    assert claims(again)["waiting_room"] is False
    assert claims(again)["participant_id"] == first.json()["participant"]["participant_id"]


def test_an_ended_meeting_admits_denies_and_lifts_nothing(as_user, host, other, controller):
    meeting = make_meeting(host=host, waiting_room_enabled=True, waiting_room_applies_to_users=True)
    waiting = join(as_user(other), meeting).json()["participant"]["participant_id"]
    assert as_user(host).post(f"{MEETINGS}/{meeting.pk}/end", format="json").status_code == 200
    assert_error(action(as_user(host), meeting, waiting, "admit"), 410, "gone")
    assert_error(action(as_user(host), meeting, waiting, "deny"), 410, "gone")
