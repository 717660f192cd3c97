"""The drain-deadline job (issue 8) exists after `migrate`, like the jobs of 0002.

A frozen copy of its darktower/schedules.py entry; 0002's apply function is reused by value (copied here),
not imported, because a migration must not import code that changes later. Backwards deletes this name only.
"""

from django.db import migrations

SCHEDULES = [
    {
        "name": "controllers.enforce_drain_deadlines",
        "task": "controllers.tasks.enforce_drain_deadlines",
        "description": "Move or end the remaining meetings of draining controllers past their deadline.",
        "every_seconds": 30,
        "expire_seconds": 30,
    },
]


def _first_or_create(model, **fields):
    return model.objects.filter(**fields).order_by("pk").first() or model.objects.create(**fields)


def create_periodic_tasks(apps, schema_editor):
    interval_model = apps.get_model("django_celery_beat", "IntervalSchedule")
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    for entry in SCHEDULES:
        task_model.objects.update_or_create(
            name=entry["name"],
            defaults={
                "task": entry["task"],
                "description": entry["description"],
                "expire_seconds": entry["expire_seconds"],
                "enabled": True,
                "interval": _first_or_create(interval_model, every=entry["every_seconds"], period="seconds"),
                "crontab": None,
            },
        )


def delete_periodic_tasks(apps, schema_editor):
    task_model = apps.get_model("django_celery_beat", "PeriodicTask")
    task_model.objects.filter(name__in=[entry["name"] for entry in SCHEDULES]).delete()


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0002_periodic_tasks"),
    ]

    operations = [
        migrations.RunPython(create_periodic_tasks, delete_periodic_tasks),
    ]
