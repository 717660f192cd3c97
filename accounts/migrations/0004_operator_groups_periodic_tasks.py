"""The operators' groups on Celery beat's schedule (django-celery-beat): "operator viewer" may look at the periodic
tasks and their schedules, "operator" may also change them (enable, disable, reschedule). Neither may add or
delete one: the schedule is created by migrations and `setup_schedules`.

Like 0003, permissions are created here first (post_migrate runs only after every migration). Reversible:
going back removes exactly these permissions from the two groups.
"""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = "operator viewer"
OPERATOR = "operator"
APP = "django_celery_beat"
# The models django-celery-beat registers in the admin.
MODELS = ("periodictask", "intervalschedule", "crontabschedule", "solarschedule", "clockedschedule")
VIEW_CODENAMES = [f"view_{model}" for model in MODELS]
CHANGE_CODENAMES = [f"change_{model}" for model in MODELS]


def _permissions(apps, codenames):
    Permission = apps.get_model("auth", "Permission")
    found = list(Permission.objects.filter(content_type__app_label=APP, codename__in=codenames))
    missing = set(codenames) - {p.codename for p in found}
    if missing:
        raise RuntimeError(f"permissions missing: {sorted(missing)}")
    return found


def periodic_task_permissions_grant(apps, schema_editor=None) -> None:
    app_config = apps.get_app_config(APP)
    # create_permissions skips app configs without a models module; migration state has none.
    app_config.models_module = True
    create_permissions(app_config, apps=apps, verbosity=0)
    app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    viewer, _ = Group.objects.get_or_create(name=VIEWER)
    viewer.permissions.add(*_permissions(apps, VIEW_CODENAMES))
    operator, _ = Group.objects.get_or_create(name=OPERATOR)
    operator.permissions.add(*_permissions(apps, VIEW_CODENAMES + CHANGE_CODENAMES))


def periodic_task_permissions_revoke(apps, schema_editor) -> None:
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    granted = Permission.objects.filter(content_type__app_label=APP, codename__in=VIEW_CODENAMES + CHANGE_CODENAMES)
    for group in Group.objects.filter(name__in=[VIEWER, OPERATOR]):
        group.permissions.remove(*granted)


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0003_operator_groups"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [migrations.RunPython(periodic_task_permissions_grant, periodic_task_permissions_revoke)]
