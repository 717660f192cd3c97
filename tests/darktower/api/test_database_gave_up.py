"""A statement PostgreSQL cancels (statement_timeout, lock_timeout, an operator's pg_cancel_backend) rolled the
request's transaction back: the client gets a retryable 503 in the error shape, never a 500, and nothing of the
request remains."""

from __future__ import annotations

import threading

import pytest
from django.db import connection, transaction
from rest_framework.test import APIClient

from meetings.models import Meeting, MeetingParticipant
from tests.factories import make_controller, make_meeting, make_user, user_token

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize(("setting", "sqlstate"), [("statement_timeout", "57014"), ("lock_timeout", "55P03")])
def test_a_join_whose_statement_the_database_cancels_answers_a_retryable_503(setting, sqlstate, caplog):
    make_controller(region="us-east-1", controller_id="mc-0")
    meeting = make_meeting(host=make_user())
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {user_token(make_user())}")
    locked, release = threading.Event(), threading.Event()

    def lock_the_meeting_row():
        try:
            with transaction.atomic():
                Meeting.objects.select_for_update().get(pk=meeting.pk)
                locked.set()
                release.wait(timeout=30)
        finally:
            connection.close()

    holder = threading.Thread(target=lock_the_meeting_row)
    holder.start()
    try:
        assert locked.wait(timeout=10)
        with connection.cursor() as cursor:
            cursor.execute(f"SET {setting} = '200ms'")
        response = client.post(f"/api/v1/meetings/{meeting.pk}/join", {}, format="json")
    finally:
        with connection.cursor() as cursor:
            cursor.execute(f"RESET {setting}")
        release.set()
        holder.join(timeout=30)

    assert response.status_code == 503, response.content
    assert response.json()["error"]["code"] == "retry"
    assert response["Retry-After"] == "1"
    assert not MeetingParticipant.objects.exists()
    assert sqlstate in caplog.text
    assert client.post(f"/api/v1/meetings/{meeting.pk}/join", {}, format="json").status_code == 201
