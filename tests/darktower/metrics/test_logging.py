"""Structured logs: JSON lines in production, text in development, and no emails or credentials in either.

The formats are checked in a fresh interpreter configured by the real settings (logging is set up once per
process), the redaction filter directly on records.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest

from darktower.log_redaction import RedactingFilter, redact
from tools.devenv import ROOT

JWT = "eyJhbGciOiJFZERTQSJ9.eyJzdWIiOiJ1c2VyIn0.c2lnbmF0dXJlX2J5dGVz"
EMIT = textwrap.dedent("""
    import django
    django.setup()
    import logging
    logging.getLogger("darktower.probe").warning("login failed for %s with %s", "alice@example.com", "Bearer abc.def")
    logging.getLogger("darktower.probe").info("plain %d", 7)
""")


def emitted(**env: str) -> list[str]:
    variables = {k: v for k, v in os.environ.items() if k not in {"LOG_FORMAT", "LOG_LEVEL"}}
    completed = subprocess.run(
        [sys.executable, "-c", EMIT], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**variables, "DJANGO_SETTINGS_MODULE": "darktower.settings", **env},
    )
    assert completed.returncode == 0, completed.stderr
    return completed.stderr.strip().splitlines()


def test_production_mode_writes_one_json_object_per_line():
    lines = emitted(DEBUG="0", SECRET_KEY="x" * 50, SIGNING_KEY_ENCRYPTION_KEY="y" * 50)

    records = [json.loads(line) for line in lines]
    assert [(r["level"], r["logger"]) for r in records] == [("WARNING", "darktower.probe"), ("INFO", "darktower.probe")]
    assert records[0]["message"] == "login failed for [redacted-email] with Bearer [redacted]"
    assert records[1]["message"] == "plain 7"
    assert all("ts" in record for record in records)
    assert "alice@example.com" not in "\n".join(lines)


def test_development_mode_writes_readable_text():
    lines = emitted(DEBUG="1")

    assert len(lines) == 2
    assert lines[0].endswith("WARNING darktower.probe login failed for [redacted-email] with Bearer [redacted]")
    with pytest.raises(json.JSONDecodeError):
        json.loads(lines[0])


WORKER_READY = textwrap.dedent("""
    import django
    django.setup()
    import logging
    logging.getLogger("celery.apps.worker").info("%s ready.", "celery@probe")
    logging.getLogger("celery.worker.consumer.connection").info("Connected to the broker")
""")


def test_the_worker_says_it_is_ready_whatever_the_log_level():
    """`make run` (tools/devenv.py) and any supervisor waiting on a worker read its one "ready" line."""
    variables = {k: v for k, v in os.environ.items() if k not in {"LOG_FORMAT", "LOG_LEVEL"}}
    completed = subprocess.run(
        [sys.executable, "-c", WORKER_READY], cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
        env={**variables, "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1", "LOG_LEVEL": "WARNING"},
    )
    assert completed.returncode == 0, completed.stderr
    lines = completed.stderr.strip().splitlines()

    assert len(lines) == 1
    assert lines[0].endswith("INFO celery.apps.worker celery@probe ready.")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("user bob.smith+x@mail.example.org locked", "user [redacted-email] locked"),
        (f"Authorization: Bearer {JWT}", "Authorization: Bearer [redacted]"),
        (f"token={JWT} rejected", "token=[redacted-jwt] rejected"),
        ("header ApiKey dt_ab12cd34_s3cr3tPart-x", "header ApiKey [redacted]"),
        ("key dt_ab12cd34_s3cr3tPart-x revoked", "key [redacted-api-key] revoked"),
        ("client secret dtsec_Zm9vYmFy_baz", "client secret [redacted-secret]"),
        ("controller mc-0001 in us-east-1: 3 meetings", "controller mc-0001 in us-east-1: 3 meetings"),
    ],
)
def test_redact(text, expected):
    assert redact(text) == expected


def record(msg: object, *args: object) -> logging.LogRecord:
    return logging.LogRecord("x", logging.INFO, __file__, 1, msg, args or None, None)


def test_filter_redacts_the_arguments_and_keeps_the_record():
    entry = record("joined %s as %s (%d)", "carol@example.net", JWT, 3)

    assert RedactingFilter().filter(entry) is True
    assert entry.getMessage() == "joined [redacted-email] as [redacted-jwt] (3)"


def test_filter_leaves_clean_records_untouched():
    entry = record("swept %d controllers", 4)

    RedactingFilter().filter(entry)

    assert (entry.msg, entry.args) == ("swept %d controllers", (4,))


def test_filter_survives_a_format_that_does_not_match_its_args():
    entry = record("for %s and %s", "dave@example.com")

    assert RedactingFilter().filter(entry) is True
    assert entry.getMessage() == "for %s and %s"


def test_the_console_handler_carries_the_filter():
    filters = [f for handler in logging.getLogger().handlers for f in handler.filters]

    assert any(isinstance(f, RedactingFilter) for f in filters)
