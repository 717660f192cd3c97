"""Development logs: one line per event, routine job lines only when asked for, an access line per request.

The logging set-up is checked as a process gets it: the settings imported afresh in a subprocess (django.setup()
applies LOGGING on top of Django's own defaults), its stderr read back.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

import pytest
from django.test import Client

from tools.devenv import ROOT

ACCESS_LOG = "darktower.access_log.AccessLogMiddleware"


def log_in_a_process(code: str, **env: str) -> list[str]:
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("LOG_")}
    script = f"import django, logging; django.setup()\n{code}"
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=True,
        env={**inherited, "DJANGO_SETTINGS_MODULE": "darktower.settings", "DEBUG": "1", **env},
    )
    return done.stderr.splitlines()


def test_a_warning_of_django_is_printed_once():
    lines = log_in_a_process("logging.getLogger('django.request').warning('Not Found: /nowhere')")

    assert [line for line in lines if "Not Found: /nowhere" in line] == [lines[-1]]
    assert " WARNING django.request Not Found: /nowhere" in lines[-1]


ROUTINE = (
    "logging.getLogger('celery.worker.strategy').info('Task t[1] received')\n"
    "logging.getLogger('celery.app.trace').info('Task t[1] succeeded in 0.01s')\n"
    "logging.getLogger('celery.beat').info('Scheduler: Sending due task t')\n"
    "logging.getLogger('celery.app.trace').error('Task t[2] raised unexpected: boom')\n"
    "logging.getLogger('controllers.services.health').info('stale sweep marked 1 meeting_controller(s)')\n"
)


def test_routine_job_lines_are_off_at_the_default_level_and_errors_still_show():
    lines = log_in_a_process(ROUTINE)

    assert not any("received" in line or "succeeded" in line or "Sending due task" in line for line in lines)
    assert any("Task t[2] raised unexpected: boom" in line for line in lines)
    assert any("stale sweep marked 1" in line for line in lines)


def test_log_routine_level_brings_the_routine_lines_back():
    lines = log_in_a_process(ROUTINE, LOG_ROUTINE_LEVEL="INFO")

    assert sum("received" in line or "succeeded" in line or "Sending due task" in line for line in lines) == 3


@pytest.fixture
def access_logged(settings):
    if ACCESS_LOG not in settings.MIDDLEWARE:
        settings.MIDDLEWARE = [settings.MIDDLEWARE[0], ACCESS_LOG, *settings.MIDDLEWARE[1:]]


@pytest.mark.django_db
def test_every_request_gets_one_access_line_without_its_query_string(access_logged, caplog):
    caplog.set_level(logging.INFO, logger="darktower.access")

    Client().get("/health?token=s3cret-value&email=someone@example.com")
    Client().get("/api/v1/nowhere")

    lines = [record.getMessage() for record in caplog.records if record.name == "darktower.access"]
    assert len(lines) == 2
    method, path, status, duration, unit = lines[0].split()
    assert (method, path, status, unit) == ("GET", "/health", "200", "ms")
    assert float(duration) >= 0
    assert lines[1].startswith("GET /api/v1/nowhere 404 ")
    assert "s3cret" not in "\n".join(lines) and "example.com" not in "\n".join(lines)


def test_the_access_log_is_on_in_development_and_can_be_turned_off():
    show = f"import sys; from django.conf import settings; sys.stderr.write(str({ACCESS_LOG!r} in settings.MIDDLEWARE))"

    assert log_in_a_process(show)[-1] == "True"
    assert log_in_a_process(show, ACCESS_LOG="0")[-1] == "False"


def test_a_404_gets_its_access_line_and_djangos_warning_once():
    lines = log_in_a_process("from django.test import Client; Client(HTTP_HOST='127.0.0.1').get('/nowhere?q=1')")

    access, warning = sorted(line.split(" ", 2)[2] for line in lines if "/nowhere" in line)
    assert access.startswith("INFO darktower.access GET /nowhere 404 ")
    assert warning == "WARNING django.request Not Found: /nowhere"
