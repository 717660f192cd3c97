"""gunicorn settings for every deployment: `gunicorn -c python:darktower.gunicorn_conf darktower.wsgi:application`.

Only what the application needs from its server lives here (command-line flags still set binds and sizes).
With PROMETHEUS_MULTIPROC_DIR set, every worker writes its metric samples to files in that directory
(darktower/metrics.py); when gunicorn replaces a worker, the dead worker's live-gauge files must go, or the
scrape would keep reporting a process that no longer exists.
"""

from __future__ import annotations

import gc
import os
from typing import Any

from prometheus_client import multiprocess

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "darktower.settings")


def child_exit(server: Any, worker: Any) -> None:
    """gunicorn calls this in the master after a worker exited (crash, max-requests, scale-down, SIGTERM)."""
    from django.conf import settings

    if settings.PROMETHEUS_MULTIPROC_DIR:
        multiprocess.mark_process_dead(worker.pid, settings.PROMETHEUS_MULTIPROC_DIR)


def post_worker_init(worker: Any) -> None:
    """gunicorn calls this in each worker once it has loaded the application. The URL configuration (and with it
    every view module) is imported now rather than by the first request, then everything alive is moved out of
    the collector's sight (gc.freeze): modules, classes, settings and URL patterns live as long as the worker, and
    without this every full collection during a request walks them all again."""
    from django.urls import get_resolver

    get_resolver().url_patterns  # noqa: B018 -- imports the URL configuration and the views it names
    gc.collect()
    gc.freeze()
