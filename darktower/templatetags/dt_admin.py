"""A date hierarchy for tables too big for Django's: choices come from the filtered rows' first and last
timestamps (min/max, answered by the index on the column) instead of SELECT DISTINCT date_trunc(...) over every
row of a year or month. A choice may lead to an empty page; that is the price of never scanning the table."""

from __future__ import annotations

import calendar
import datetime
import re
from typing import Any

from django import template
from django.contrib.admin.templatetags.admin_list import date_hierarchy
from django.db.models import Max, Min
from django.utils import formats, timezone
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import capfirst

register = template.Library()


def _int(value: Any) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


@register.inclusion_tag("admin/date_hierarchy.html")
def bounded_date_hierarchy(cl: Any) -> dict[str, Any] | None:
    field = cl.date_hierarchy
    year = _int(cl.params.get(f"{field}__year"))
    month = _int(cl.params.get(f"{field}__month"))
    day = _int(cl.params.get(f"{field}__day"))
    if year and month and day:
        return date_hierarchy(cl)  # no query at this level

    def link(filters: dict[str, Any]) -> str:
        return cl.get_query_string(filters, [f"{field}__"])

    bounds = cl.queryset.order_by().aggregate(first=Min(field), last=Max(field))
    if not bounds["first"]:
        return {"show": False}
    first, last = timezone.localtime(bounds["first"]), timezone.localtime(bounds["last"])
    if year and month:
        days = [
            datetime.date(year, month, d) for d in range(1, calendar.monthrange(year, month)[1] + 1)
            if first.date() <= datetime.date(year, month, d) <= last.date()
        ]
        return {
            "show": True,
            "back": {"link": link({f"{field}__year": year}), "title": str(year)},
            "choices": [
                {"link": link({f"{field}__year": year, f"{field}__month": month, f"{field}__day": d.day}),
                 "title": capfirst(formats.date_format(d, "MONTH_DAY_FORMAT"))}
                for d in days
            ],
        }
    if year:
        months = [
            datetime.date(year, m, 1) for m in range(1, 13)
            if (first.year, first.month) <= (year, m) <= (last.year, last.month)
        ]
        return {
            "show": True,
            "back": {"link": link({}), "title": "All dates"},
            "choices": [
                {"link": link({f"{field}__year": year, f"{field}__month": m.month}),
                 "title": capfirst(formats.date_format(m, "YEAR_MONTH_FORMAT"))}
                for m in months
            ],
        }
    return {
        "show": True,
        "back": None,
        "choices": [
            {"link": link({f"{field}__year": str(y)}), "title": str(y)} for y in range(first.year, last.year + 1)
        ],
    }


# Names whose first letter is small: the admin capitalises the first letter of every label ("gRPC endpoint"
# would read "GRPC endpoint"), so a label starting with one is given back its spelling.
_SMALL_FIRST_LETTER = re.compile(r"(?<=>)GRPC\b")


@register.filter
def dt_label(label_tag: str) -> str:
    """A field's rendered <label> with names like gRPC spelled as written."""
    fixed = _SMALL_FIRST_LETTER.sub("gRPC", str(label_tag))
    return mark_safe(fixed) if isinstance(label_tag, SafeString) else fixed  # noqa: S308 (the label was safe)
