"""What a join request costs around the join itself (meeting_join): the statements its authentication and its
Idempotency-Key add, pinned so that they cannot creep back. The join's own statements are pinned in
test_join.py."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.db import connection

from meetings.api import views
from meetings.models import MeetingParticipant
from tests.factories import make_meeting, make_user

pytestmark = pytest.mark.django_db

REGION = "us-east-1"
# Inside the test's transaction the view's BEGIN / COMMIT are a SAVEPOINT / RELEASE: transaction control, not
# statements (outside a test they are not statements either).
_TRANSACTION_CONTROL = re.compile(r"^\s*(SAVEPOINT|RELEASE SAVEPOINT|ROLLBACK TO SAVEPOINT)\b")


@contextmanager
def statements_around_the_join(monkeypatch) -> Iterator[list[str]]:
    """The statements a request executes outside meeting_join (the service the join views call)."""
    outside: list[str] = []
    inside = False
    join = views.meeting_join

    def observed_join(**kwargs: Any) -> Any:
        nonlocal inside
        inside = True
        try:
            return join(**kwargs)
        finally:
            inside = False

    def count(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        if not inside and not _TRANSACTION_CONTROL.match(sql):
            outside.append(sql)
        return execute(sql, params, many, context)

    monkeypatch.setattr(views, "meeting_join", observed_join)
    with connection.execute_wrapper(count):
        yield outside


def _table(sql: str) -> str:
    return re.search(r'(?:FROM|INTO|UPDATE)\s+"?(\w+)', sql).group(1)


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "idempotency-key"])
def test_a_signed_in_join_reads_its_user_around_the_join_only_with_a_key(as_user, host, controller, monkeypatch, keyed):
    meeting = make_meeting(host=host)
    client = as_user(make_user())
    headers = {"HTTP_IDEMPOTENCY_KEY": str(uuid.uuid4())} if keyed else {}
    with statements_around_the_join(monkeypatch) as outside:
        response = client.post(f"/api/v1/meetings/{meeting.pk}/join", {"region": REGION}, format="json", **headers)
    assert response.status_code == 201, response.content
    # Without a key, nothing: the join's statement checks that the token's user exists and is active. With a key,
    # the token's user (a replay must refuse a deactivated user too), the key's claim before the join and its
    # answer after.
    expected = ["users", "idempotency_keys", "idempotency_keys"] if keyed else []
    assert [_table(sql) for sql in outside] == expected, outside


@pytest.mark.parametrize("keyed", [False, True], ids=["plain", "idempotency-key"])
def test_a_guest_join_costs_nothing_around_the_join_but_its_key(api, host, controller, monkeypatch, keyed):
    meeting = make_meeting(host=host, allow_guests=True)
    headers = {"HTTP_IDEMPOTENCY_KEY": str(uuid.uuid4())} if keyed else {}
    with statements_around_the_join(monkeypatch) as outside:
        response = api.post(f"/api/v1/meetings/{meeting.pk}/guest-token", {"display_name": "Visitor", "region": REGION},
                            format="json", **headers)
    assert response.status_code == 201, response.content
    assert [_table(sql) for sql in outside] == (["idempotency_keys", "idempotency_keys"] if keyed else []), outside
    assert MeetingParticipant.objects.filter(meeting=meeting).count() == 1
