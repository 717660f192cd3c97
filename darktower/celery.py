"""The Celery application: broker and result backend from REDIS_URL, tasks from each app."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "darktower.settings")

app = Celery("darktower")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
