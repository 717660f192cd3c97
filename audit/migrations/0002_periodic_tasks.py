"""The periodic jobs exist after `migrate`, so operators see and tune them in the admin.

A frozen copy of darktower/schedules.py as of this migration, and of its apply function: a migration must not
import code that changes later. `manage.py setup_schedules` applies the live table; a job added there later
needs its own data migration to exist on a fresh `migrate`. Forwards updates rows by name (idempotent);
backwards deletes these names only.
"""

from django.conf import settings
from django.db import migrations

SCHEDULES = [
    {
        "name": "controllers.sweep_stale",
        "task": "controllers.tasks.sweep_stale",
        "description": "Mark controllers and media handlers with stale heartbeats unhealthy.",
        "every_seconds": "STALE_SWEEP_INTERVAL_SECONDS",
        "expire_seconds": "STALE_SWEEP_INTERVAL_SECONDS",
    },
    {
        "name": "audit.relay_outbox",
        "task": "audit.tasks.relay_outbox",
        "description": "Publish pending outbox events to Redis (stream and controller capacity).",
        "every_seconds": 2,
        "expire_seconds": 2,
    },
    {
        "name": "meetings.end_unhealthy_assignments",
        "task": "meetings.tasks.end_unhealthy_assignments",
        "description": "End active assignments on unhealthy controllers so the next join reassigns.",
        "every_seconds": 60,
        "expire_seconds": 60,
    },
    {
        "name": "darktower.retention",
        "task": "darktower.tasks.run_retention",
        "description": "Delete data past its retention period (meetings, recordings, assignments, keys, outbox rows).",
        "minute": "20",
        "hour": "3",
    },
    {
        "name": "audit.maintain_partitions",
        "task": "audit.tasks.maintain_audit_partitions",
        "description": "Create the next months' audit_logs partitions and drop those past retention.",
        "minute": "0",
        "hour": "3",
    },
]


def _seconds(value):
    # The sweep interval is a setting (STALE_SWEEP_INTERVAL_SECONDS) read when the migration runs.
    return getattr(settings, value) if isinstance(value, str) else value


def _first_or_create(model, **fields):
    return model.objects.filter(**fields).order_by("pk").first() or model.objects.create(**fields)


def create_periodic_tasks(apps, schema_editor):
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    crontab_model = apps.get_model("django_celery_beat", "CrontabSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    for entry in SCHEDULES:
        schedule = {"interval": None, "crontab": None}
        if "every_seconds" in entry:
            schedule["interval"] = _first_or_create(
                interval_model, every=_seconds(entry["every_seconds"]), period="seconds"
            )
        else:
            schedule["crontab"] = _first_or_create(
                crontab_model, minute=entry["minute"], hour=entry["hour"], day_of_week="*", day_of_month="*",
                month_of_year="*", timezone="UTC",
            )
        task_model.objects.update_or_create(
            name=entry["name"],
            defaults={
                "task": entry["task"],
                "description": entry["description"],
                "expire_seconds": _seconds(entry.get("expire_seconds")),
                "enabled": True,
                **schedule,
            },
        )


def delete_periodic_tasks(apps, schema_editor):
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    task_model.objects.filter(name__in=[entry["name"] for entry in SCHEDULES]).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0001_initial"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.RunPython(create_periodic_tasks, delete_periodic_tasks),
    ]
