"""`manage.py flush` (and so the teardown of every transactional test) empties the unmanaged audit_logs too."""

from __future__ import annotations

import pytest
from django.core.management import call_command

from audit.services import audit_record
from tests.factories import make_user
from tests.fixtures.sql import sql_value


@pytest.mark.django_db
def test_flush_empties_users_and_the_audit_logs_that_reference_them():
    user = make_user()
    audit_record(event_type="user_login", action="login", actor_type="user", actor_user_id=user.pk)

    call_command("flush", "--no-input")  # inside the test's transaction: rolled back afterwards

    assert sql_value("SELECT count(*) FROM users") == 0
    assert sql_value("SELECT count(*) FROM audit_logs") == 0
