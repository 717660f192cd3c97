"""The recordings admin ends and replaces share links: unshare and rotate actions, confirmed and audited, for
superusers and staff holding meetings.manage_share_recording; the new link is shown once on the response page
itself (never in a message, which travels in a cookie)."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Permission
from django.urls import reverse

from audit.models import AuditLog
from meetings.models import Recording
from meetings.selectors import recording_by_share_token
from meetings.services.recordings import recording_share
from tests.factories import make_meeting, make_recording, make_user

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:meetings_recording_changelist"


@pytest.fixture
def shared():
    host = make_user(display_name="Host")
    recording = make_recording(meeting=make_meeting(host=host), status="ready")
    return recording_share(recording_id=recording.pk, actor_user_id=host.pk)


def run(client, action, recording, *, confirm=True):
    form = {"action": action, "_selected_action": [recording.pk]}
    if confirm:
        form["post"] = "yes"
    return client.post(reverse(CHANGELIST), form)


def test_superuser_unshares_through_a_confirmation_page(client, superuser, shared):
    client.force_login(superuser)
    confirm = run(client, "unshare_action", shared.recording, confirm=False)
    assert confirm.status_code == 200 and b"Unshare recordings" in confirm.content
    assert Recording.objects.get(pk=shared.recording.pk).is_public  # nothing before confirmation

    done = run(client, "unshare_action", shared.recording)

    assert done.status_code == 302
    row = Recording.objects.get(pk=shared.recording.pk)
    assert (row.is_public, row.share_token_hash, row.share_expires_at) == (False, None, None)
    with pytest.raises(Exception, match="No such shared recording"):
        recording_by_share_token(token=shared.token)
    audit = AuditLog.objects.get(event_type="recording_unshared", target_id=str(shared.recording.pk))
    assert audit.actor_user_id == superuser.pk and audit.metadata.get("by") == "operator"


def test_rotate_shows_the_new_link_once_on_the_page(client, superuser, shared):
    client.force_login(superuser)

    page = run(client, "rotate_share_action", shared.recording)

    assert page.status_code == 200
    html = page.content.decode()
    with pytest.raises(Exception, match="No such shared recording"):
        recording_by_share_token(token=shared.token)
    links = re.findall(r"https?://[^<\s]*/api/v1/shared-recordings/(dtshr_[A-Za-z0-9_-]+)", html)
    assert len(links) == 1
    new_token = links[0]
    assert recording_by_share_token(token=new_token).pk == shared.recording.pk
    assert "messages" not in page.cookies or new_token not in page.cookies["messages"].value
    audit = AuditLog.objects.get(event_type="recording_share_rotated", target_id=str(shared.recording.pk))
    assert audit.actor_user_id == superuser.pk and new_token not in str(audit.metadata)
    # The changelist afterwards does not show it again.
    assert new_token not in client.get(reverse(CHANGELIST)).content.decode()


@pytest.mark.parametrize("action", ["unshare_action", "rotate_share_action"])
def test_staff_need_the_share_permission(client, operator_user, viewer_user, shared, action):
    for user in (viewer_user, operator_user):
        client.force_login(user)
        response = run(client, action, shared.recording)
        assert response.status_code in (200, 302)
        assert recording_by_share_token(token=shared.token).pk == shared.recording.pk
    assert not AuditLog.objects.filter(event_type__in=["recording_unshared", "recording_share_rotated"]).exists()

    operator_user.user_permissions.add(
        Permission.objects.get(content_type__app_label="meetings", codename="manage_share_recording")
    )
    operator_user = type(operator_user).objects.get(pk=operator_user.pk)  # a fresh permission cache
    client.force_login(operator_user)
    run(client, action, shared.recording)
    with pytest.raises(Exception, match="No such shared recording"):
        recording_by_share_token(token=shared.token)


def test_the_change_page_shows_until_when_but_no_token(client, superuser, shared):
    client.force_login(superuser)
    html = client.get(reverse("admin:meetings_recording_change", args=[shared.recording.pk])).content.decode()
    assert "share_expires_at" in html or "Share expires at" in html
    assert shared.token not in html and shared.recording.share_token_hash not in html
