"""A logging filter that blanks credentials and emails out of log records (settings.LOGGING, every handler).

Defence in depth: code must not log these in the first place (STYLE.md); this catches the one that slips
through, e.g. an exception message that quotes a header or a third-party library logging a request. It
rewrites the record's message once formatted with its args, so the text and JSON formatters both see the
redacted text. Extra fields (`extra=`) and tracebacks are not rewritten: do not put secrets there.
"""

from __future__ import annotations

import logging
import re

# Order matters: a JWT inside "Bearer <jwt>" is caught by the first pattern, a bare one by the second.
_PATTERNS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Authorization header values: "Bearer <token>", "ApiKey dt_<prefix>_<secret>".
    (re.compile(r"\b(Bearer|ApiKey)\s+[A-Za-z0-9._~+/=-]+", re.IGNORECASE), r"\1 [redacted]"),
    # A JWT / JWS compact serialisation: base64url("{...") . payload . signature.
    (re.compile(r"\beyJ[A-Za-z0-9_-]*\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"), "[redacted-jwt]"),
    # Our own credential formats: API keys (dt_<prefix>_<secret>) and service client secrets (dtsec_...).
    (re.compile(r"\bdtsec_[A-Za-z0-9_-]+"), "[redacted-secret]"),
    # Recording share-link tokens (dtshr_...), e.g. in the path Django logs for a 404.
    (re.compile(r"\bdtshr_[A-Za-z0-9_-]+"), "[redacted-share-token]"),
    (re.compile(r"\bdt_[A-Za-z0-9]+_[A-Za-z0-9_-]+"), "[redacted-api-key]"),
    (re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}"), "[redacted-email]"),
)


def redact(text: str) -> str:
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


class RedactingFilter(logging.Filter):
    """Replaces the record's message (msg % args) by its redacted text; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A format that does not match its args: keep the redacted format string rather than let logging's
            # error report print the raw args.
            record.msg, record.args = redact(str(record.msg)), ()
            return True
        redacted = redact(message)
        if redacted != message:
            record.msg, record.args = redacted, ()
        return True
