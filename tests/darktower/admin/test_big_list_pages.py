"""The big admin lists that never count their table (health transitions, meeting assignments, outbox events, as
the audit log): every page they link to exists, whatever the planner estimates, and a total that is not counted
says so ("about N"). One paginator serves them all (darktower.admin_tools.LookaheadPaginator)."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest
from django.contrib import admin
from django.db import connection
from django.test import RequestFactory
from django.urls import reverse

from audit.models import OutboxEvent
from audit.services import outbox_enqueue
from controllers.models import HealthTransition
from darktower.admin_tools import LookaheadPaginator
from meetings.models import MeetingAssignment
from tests.factories import make_controller, make_meeting

pytestmark = pytest.mark.django_db


def _transitions(n: int) -> None:
    for i in range(n):
        HealthTransition.objects.create(
            component_type="controller", component_id=f"mc-{i}", region="eu-west-1", from_status="healthy",
            to_status="unhealthy", reason="stale", actor_type="system",
        )


def _assignments(n: int) -> None:
    controller = make_controller(region="eu-west-1")
    for _ in range(n):
        MeetingAssignment.objects.create(
            meeting=make_meeting(), meeting_controller=controller, region="eu-west-1", assigned_by_gc_id="gc-test",
        )


def _outbox(n: int) -> None:
    for i in range(n):
        outbox_enqueue(aggregate_type="meeting", aggregate_id=str(i), event_type="meeting_ended", payload={})


LISTS: dict[str, tuple[type, Callable[[int], None]]] = {
    "health transitions": (HealthTransition, _transitions),
    "meeting assignments": (MeetingAssignment, _assignments),
    "outbox events": (OutboxEvent, _outbox),
}


@pytest.fixture(params=list(LISTS))
def big_list(request, monkeypatch):
    model, make = LISTS[request.param]
    model_admin = admin.site._registry[model]
    monkeypatch.setattr(type(model_admin), "list_per_page", 2)
    url = reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_changelist")
    return model, make, url


def _linked_pages(html: str) -> list[int]:
    return sorted({int(p) for p in re.findall(r'href="\?p=(\d+)"', html)} | {
        int(p) for p in re.findall(r'<span class="this-page">(\d+)</span>', html)
    })


def _rows_on(client, url: str, page: int) -> int:
    response = client.get(url, {"p": page})
    assert response.status_code == 200, page
    table = response.content.decode().split('<table id="result_list">')[1]
    body = table.split("<tbody>")[1].split("</tbody>")[0]
    return body.count("<tr")


def test_every_big_list_uses_the_shared_paginator():
    for model, _ in LISTS.values():
        model_admin = admin.site._registry[model]
        paginator = model_admin.get_paginator(RequestFactory().get("/", {"p": "3"}), model.objects.order_by("pk"), 2)
        assert type(paginator) is LookaheadPaginator and paginator.shown_page == 3
        assert model_admin.show_full_result_count is False


def test_an_estimate_above_the_rows_left_offers_no_empty_page(client, superuser, big_list):
    model, make, url = big_list
    make(60)
    # The planner's figure stays at 60 while only 5 rows are left: pages 4 to 30 would be empty.
    with connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {model._meta.db_table}")
    model.objects.filter(pk__in=list(model.objects.order_by("pk").values_list("pk", flat=True)[5:])).delete()
    client.force_login(superuser)

    html = client.get(url).content.decode()

    assert _linked_pages(html) == [1, 2, 3]
    assert [_rows_on(client, url, page) for page in (1, 2, 3)] == [2, 2, 1]
    assert f"5 {model._meta.verbose_name_plural}" in html and "about" not in html


def test_a_total_beyond_the_lookahead_is_about_n_and_every_linked_page_has_rows(client, superuser, big_list):
    model, make, url = big_list
    make(30)  # 15 pages of 2; the first page looks 10 pages ahead (20 rows) and finds more
    client.force_login(superuser)

    html = client.get(url).content.decode()

    pages = _linked_pages(html)
    assert pages[-1] == 11
    assert all(_rows_on(client, url, page) == 2 for page in (2, *pages[-2:]))
    assert re.search(rf"about \d[\d,]* {model._meta.verbose_name_plural}", html)
    # Page 2 of the estimate is never empty, and deeper in the last page is exact again.
    html = client.get(url, {"p": 14}).content.decode()
    assert _linked_pages(html)[-1] == 15
    assert f"30 {model._meta.verbose_name_plural}" in html
    assert _rows_on(client, url, 15) == 2
