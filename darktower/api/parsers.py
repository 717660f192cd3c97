"""The only request format the API accepts: JSON, strictly."""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser


class StrictJSONParser(JSONParser):
    """DRF's JSONParser (NaN and Infinity already refused) plus what would otherwise reach the database as
    a 500: nesting deep enough to exhaust the recursion limit, lone UTF-16 surrogates ("\\ud800"), which
    decode into Python strings that cannot be encoded as UTF-8, and NUL characters ("\\u0000") anywhere, keys
    included, which PostgreSQL refuses in text and jsonb (an error that names an unknown field echoes it, and
    the idempotency ledger stores that error)."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
        except (UnicodeDecodeError, LookupError) as exc:
            raise ParseError("The request body is not valid UTF-8.") from exc
        try:
            data = json.loads(text, parse_constant=_refuse_constant)
        except (ValueError, RecursionError) as exc:
            raise ParseError("The request body is not valid JSON.") from exc
        try:
            json.dumps(data, ensure_ascii=False).encode("utf-8")
        except (UnicodeEncodeError, RecursionError) as exc:
            raise ParseError("The request body contains invalid Unicode.") from exc
        if _contains_nul(data):
            raise ParseError("The request body contains a NUL character (\\u0000), which is not accepted.")
        return data


def _contains_nul(data: Any) -> bool:
    pending = [data]
    while pending:
        item = pending.pop()
        if isinstance(item, str):
            if "\x00" in item:
                return True
        elif isinstance(item, dict):
            pending.extend(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return False


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")
