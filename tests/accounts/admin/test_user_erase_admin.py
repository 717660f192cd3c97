"""Erasing users from the admin: the "Erase" action and Django's own delete both go through user_erase."""

from __future__ import annotations

import pytest
from django.contrib.admin.helpers import ACTION_CHECKBOX_NAME
from django.contrib.messages import get_messages
from django.urls import reverse

from accounts.models import User
from audit.models import AuditLog
from meetings.models import Meeting, MeetingStatus
from tests.factories import make_user
from tests.fixtures.personal_data import make_subject, tables_naming

pytestmark = pytest.mark.django_db

CHANGELIST = reverse("admin:accounts_user_changelist")


def _erase(client, *user_ids, confirm: bool = True):
    data = {"action": "erase_action", ACTION_CHECKBOX_NAME: [str(pk) for pk in user_ids]}
    if confirm:
        data["post"] = "yes"
    return client.post(CHANGELIST, data)


def _messages(response) -> list[str]:
    return [str(message) for message in get_messages(response.wsgi_request)]


def test_the_erase_action_asks_first_then_erases_and_says_so_again(client, superuser):
    subject = make_subject()
    client.force_login(superuser)

    asked = _erase(client, subject.user.pk, confirm=False)
    assert asked.status_code == 200
    assert User.objects.filter(pk=subject.user.pk).exists()

    done = _erase(client, subject.user.pk)
    assert done.status_code == 302
    assert not User.objects.filter(pk=subject.user.pk).exists()
    assert Meeting.objects.get(pk=subject.hosted.pk).status == MeetingStatus.ENDED
    row = AuditLog.objects.filter(event_type="user_erased").get()
    assert (row.actor_user_id, row.metadata["via"]) == (superuser.pk, "admin")
    assert any("erased" in message for message in _messages(done))
    assert tables_naming(subject.needles) == {}

    again = _erase(client, subject.user.pk)
    assert any("nothing to erase" in message for message in _messages(again))
    assert AuditLog.objects.filter(event_type="user_erased").count() == 1


def test_the_erase_action_needs_the_delete_permission(client, operator_user):
    user = make_user()
    client.force_login(operator_user)

    _erase(client, user.pk)

    assert User.objects.filter(pk=user.pk).exists()


def test_djangos_delete_erases_too(client, superuser):
    subject = make_subject()
    client.force_login(superuser)

    response = client.post(reverse("admin:accounts_user_delete", args=[subject.user.pk]), {"post": "yes"})

    assert response.status_code == 302
    assert AuditLog.objects.filter(event_type="user_erased", metadata__via="admin").count() == 1
    assert tables_naming(subject.needles) == {}


def test_djangos_bulk_delete_erases_each_user(client, superuser):
    first, second = make_subject(), make_user(display_name="Second Person")
    client.force_login(superuser)

    response = client.post(CHANGELIST, {
        "action": "delete_selected", ACTION_CHECKBOX_NAME: [str(first.user.pk), str(second.pk)], "post": "yes",
    })

    assert response.status_code == 302
    assert not User.objects.filter(pk__in=[first.user.pk, second.pk]).exists()
    assert AuditLog.objects.filter(event_type="user_erased", metadata__via="admin").count() == 2
    assert tables_naming([*first.needles, "Second Person"]) == {}
