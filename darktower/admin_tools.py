"""Building blocks shared by the apps' admin modules: a confirmation page for actions, a paginator that never
counts a big table and never links a page that does not exist, a list filter whose choices come from an index
instead of a DISTINCT scan, a typed-value filter, bars and badges.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.views.main import PAGE_VAR
from django.core.paginator import Paginator
from django.db import connection
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils.functional import cached_property
from django.utils.html import format_html

from darktower.errors import DomainError

HEALTH_COLOURS = {
    "pending": "#6c757d",
    "healthy": "#198754",
    "degraded": "#d39e00",
    "unhealthy": "#dc3545",
    "draining": "#0d6efd",
}


def health_badge(status: str, *, data_id: str | None = None) -> str:
    return format_html(
        '<span class="dt-health dt-health-{}" data-id="{}" style="background:{}">{}</span>',
        status, data_id or "", HEALTH_COLOURS.get(status, "#6c757d"), status,
    )


def capacity_bar(used: int, total: int, *, css_class: str = "", data_id: str | None = None) -> str:
    percent = min(100, round(100 * used / total)) if total else 0
    level = "high" if percent >= 90 else "mid" if percent >= 70 else "low"
    return format_html(
        '<div class="dt-bar {}" data-id="{}" title="{} / {} ({}%)"><div class="dt-bar-fill dt-bar-{}" '
        'style="width:{}%"></div><span class="dt-bar-text">{} / {}</span></div>',
        css_class, data_id or "", used, total, percent, level, percent, used, total,
    )


def planner_row_estimate(queryset: QuerySet[Any]) -> int:
    """The planner's row estimate for a queryset: one EXPLAIN instead of a COUNT(*) over millions of rows. An
    estimate, no page count: for a partitioned table (pg_class.reltuples of the parent is not the sum of its
    partitions) or one whose statistics predate many deletions it can be several times the real number."""
    sql, params = queryset.order_by().query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.execute(f"EXPLAIN (FORMAT JSON) {sql}", params)
        plan = cursor.fetchone()[0]
    if isinstance(plan, str):
        plan = json.loads(plan)
    return max(0, int(plan[0]["Plan"]["Plan Rows"]))


class LookaheadPaginator(Paginator):
    """Links only pages that exist, without counting the table. It reads the ids of the rows up to LOOKAHEAD
    pages past the one shown (in the list's order, so through the same index, stopping at the limit): when they
    run out the count is exact, otherwise the list ends LOOKAHEAD pages ahead and says "about N", N from the
    planner (at least what was seen). The planner's estimate alone would link pages past the real end, empty."""

    LOOKAHEAD = 10

    def __init__(self, object_list: QuerySet[Any], per_page: int, *, page: int = 1, **kwargs: Any) -> None:
        super().__init__(object_list, per_page, **kwargs)
        self.queryset = object_list
        self.shown_page = max(1, page)

    @cached_property
    def _seen(self) -> tuple[int, bool]:
        """(rows seen up to the lookahead, whether there are more)."""
        limit = (self.shown_page + self.LOOKAHEAD) * self.per_page
        seen = len(self.queryset.values_list("pk", flat=True)[: limit + 1])
        return min(seen, limit), seen > limit

    @cached_property
    def count(self) -> int:
        return self._seen[0]

    @cached_property
    def about(self) -> int | None:
        """The estimated total when the rows go on past the lookahead, else None (the count is exact). The
        pagination template (templates/admin/pagination.html) says "about N" then."""
        seen, more = self._seen
        if not more:
            return None
        return max(seen + 1, planner_row_estimate(self.queryset))


def _page_asked(request: HttpRequest) -> int:
    try:
        return int(request.GET.get(PAGE_VAR, 1))
    except ValueError:
        return 1


class UncountedListMixin:
    """For a ModelAdmin over a table too big to count on every page view (partitioned or growing without bound):
    the LookaheadPaginator, and no second count of the unfiltered table."""

    show_full_result_count = False

    def get_paginator(
        self, request: HttpRequest, queryset: QuerySet[Any], per_page: int, orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> LookaheadPaginator:
        return LookaheadPaginator(
            queryset, per_page, page=_page_asked(request), orphans=orphans,
            allow_empty_first_page=allow_empty_first_page,
        )


def distinct_values_sql(table: str, column: str) -> str:
    """A loose index scan: the distinct values of `column` (an index must lead with it) by a recursive CTE that
    jumps from one value to the next through the b-tree, instead of SELECT DISTINCT over every row. `table` and
    `column` are constants of the caller, never input."""
    return (
        f"WITH RECURSIVE v(value) AS ((SELECT min({column}) FROM {table}) UNION ALL "  # noqa: S608
        f"SELECT (SELECT min({column}) FROM {table} WHERE {column} > v.value) "
        f"FROM v WHERE v.value IS NOT NULL) SELECT value FROM v WHERE value IS NOT NULL"
    )


class IndexedDistinctFilter(admin.SimpleListFilter):
    """Choices are the distinct values of a column found by a loose index scan (a recursive CTE that jumps
    from one value to the next through a b-tree index) instead of SELECT DISTINCT over every row.
    Subclasses set `table` and `column` (constants, an index must lead with the column)."""

    table: str
    column: str
    parameter_name: str
    max_choices = 200

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        with connection.cursor() as cursor:
            cursor.execute(f"{distinct_values_sql(self.table, self.column)} LIMIT %s", [self.max_choices])
            return [(value, value) for (value,) in cursor.fetchall()]

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        if self.value():
            return queryset.filter(**{self.parameter_name: self.value()})
        return queryset


class TextInputFilter(admin.SimpleListFilter):
    """A filter whose value is typed rather than picked from a list (an email, an id): for columns with too many
    values to list. Subclasses set title, parameter_name, placeholder and `queryset`."""

    template = "admin/dt_input_filter.html"
    placeholder = ""

    def lookups(self, request: HttpRequest, model_admin: admin.ModelAdmin) -> list[tuple[str, str]]:
        return []

    def has_output(self) -> bool:
        return True

    def choices(self, changelist: Any) -> Any:
        yield {
            "parameter_name": self.parameter_name,
            "value": self.value() or "",
            "placeholder": self.placeholder,
            # The other filters, the search and the ordering ride along with the typed value.
            "hidden": [(name, value) for name, value in changelist.params.items() if name != self.parameter_name],
            "clear_link": changelist.get_query_string(remove=[self.parameter_name]),
        }


def confirmed_action(
    *,
    modeladmin: admin.ModelAdmin,
    request: HttpRequest,
    queryset: QuerySet,
    action: str,
    title: str,
    description: str,
    perform: Callable[[Any], str],
    extra_fields: list[dict[str, Any]] | None = None,
) -> HttpResponse | None:
    """Django's delete-confirmation pattern for any action: the first POST shows what will happen, the second
    (with `post=yes`) calls `perform(obj)` for each selected object, one service call each, and reports the
    outcome per object. Domain errors (Conflict, NotFound) become messages, not 500s."""
    if request.POST.get("post") != "yes":
        opts = modeladmin.model._meta
        context = {
            **modeladmin.admin_site.each_context(request),
            "title": title,
            "description": description,
            "objects": list(queryset),
            "action": action,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "opts": opts,
            "extra_fields": extra_fields or [],
            "media": modeladmin.media,
        }
        request.current_app = modeladmin.admin_site.name
        return TemplateResponse(request, "admin/dt_confirm_action.html", context)
    for obj in queryset:
        try:
            modeladmin.message_user(request, perform(obj), messages.SUCCESS)
        except DomainError as error:
            modeladmin.message_user(request, f"{obj}: {error}", messages.ERROR)
    return None
