"""The audit log's pages: every page the list links to exists, whatever the planner estimates for the
partitioned table; a total that is not counted says so ("about N"); service events name the credential that
acted."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from audit.admin import AuditLogAdmin
from audit.services import audit_record

pytestmark = pytest.mark.django_db



def _url():
    return reverse("admin:audit_auditlog_changelist")


def _rows(n: int) -> None:
    for i in range(n):
        audit_record(event_type="bulk", action="x", actor_type="system", target_type="thing", target_id=str(i))


def _linked_pages(html: str) -> list[int]:
    return sorted({int(p) for p in re.findall(r'href="\?p=(\d+)"', html)} | {
        int(p) for p in re.findall(r'<span class="this-page">(\d+)</span>', html)
    })


def _rows_on(client, page: int) -> int:
    response = client.get(_url(), {"p": page})
    assert response.status_code == 200, page
    return len(re.findall(r'<td class="field-target_id">', response.content.decode()))


def test_every_linked_page_exists_and_a_small_total_is_exact(client, superuser, monkeypatch):
    monkeypatch.setattr(AuditLogAdmin, "list_per_page", 25)
    _rows(60)
    client.force_login(superuser)
    html = client.get(_url()).content.decode()

    assert _linked_pages(html) == [1, 2, 3]
    assert [_rows_on(client, page) for page in (1, 2, 3)] == [25, 25, 10]
    assert "60 audit logs" in html and "about" not in html


def test_a_total_beyond_the_lookahead_is_about_n_and_links_only_pages_that_exist(client, superuser, monkeypatch):
    monkeypatch.setattr(AuditLogAdmin, "list_per_page", 2)
    _rows(60)  # 30 pages of 2; the first page looks 10 pages ahead (20 rows) and finds more
    client.force_login(superuser)
    html = client.get(_url()).content.decode()

    pages = _linked_pages(html)
    assert pages[-1] == 11
    assert all(_rows_on(client, page) == 2 for page in pages)
    assert re.search(r"(about|more than) \d[\d,]* audit logs", html)
    # Deeper in, the pages ahead of the one shown exist too, and the last one is exact again.
    html = client.get(_url(), {"p": 25}).content.decode()
    assert _linked_pages(html)[-1] == 30
    assert "60 audit logs" in html


def test_service_events_name_the_credential_that_acted(client, superuser):
    audit_record(event_type="controller_registered", action="register", actor_type="service",
                 target_type="meeting_controller", target_id="mc-1", metadata={"client_id": "meeting-controller"})
    audit_record(event_type="service_token_issued", action="issue", actor_type="service",
                 target_type="service_credential", target_id="media-handler")
    client.force_login(superuser)
    html = client.get(_url()).content.decode()
    actors = re.findall(r'<td class="field-actor">([^<]*)</td>', html)
    assert sorted(actors) == ["media-handler", "meeting-controller"]
