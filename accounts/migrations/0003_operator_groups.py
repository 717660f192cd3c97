"""The operators' staff groups: "operator viewer" sees the fleet, meetings and the audit trail; "operator" may
also run the fleet actions (drain/undrain, mark unhealthy, end assignments, retry outbox events).

Permissions are normally created by post_migrate, after every migration; this one creates them first so the
groups can be filled on a fresh database. `operator_groups_sync` is idempotent (tests call it again after a
flush of a transactional test removed the groups).
"""

from __future__ import annotations

from django.contrib.auth.management import create_permissions
from django.db import migrations

VIEWER = "operator viewer"
OPERATOR = "operator"

VIEW_PERMISSIONS = [
    ("controllers", "view_meetingcontroller"),
    ("controllers", "view_mediahandler"),
    ("controllers", "view_healthtransition"),
    ("meetings", "view_meeting"),
    ("meetings", "view_meetingparticipant"),
    ("meetings", "view_recording"),
    ("meetings", "view_meetingassignment"),
    ("audit", "view_auditlog"),
    ("audit", "view_outboxevent"),
]
ACTION_PERMISSIONS = [
    ("controllers", "drain_meetingcontroller"),
    ("controllers", "mark_unhealthy_meetingcontroller"),
    ("controllers", "end_assignments_meetingcontroller"),
    ("audit", "retry_outboxevent"),
]


def operator_groups_sync(apps, schema_editor=None) -> None:
    for label in {"controllers", "meetings", "audit"}:
        app_config = apps.get_app_config(label)
        # create_permissions skips app configs without a models module; migration state has none.
        app_config.models_module = True
        create_permissions(app_config, apps=apps, verbosity=0)
        app_config.models_module = None
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")

    def permissions(pairs):
        found = {
            (p.content_type.app_label, p.codename): p
            for p in Permission.objects.select_related("content_type").filter(
                content_type__app_label__in={app for app, _ in pairs}, codename__in={code for _, code in pairs}
            )
        }
        missing = set(pairs) - set(found)
        if missing:
            raise RuntimeError(f"permissions missing: {sorted(missing)}")
        return list(found.values())

    viewer, _ = Group.objects.get_or_create(name=VIEWER)
    viewer.permissions.set(permissions(VIEW_PERMISSIONS))
    operator, _ = Group.objects.get_or_create(name=OPERATOR)
    operator.permissions.set(permissions(VIEW_PERMISSIONS + ACTION_PERMISSIONS))


def operator_groups_remove(apps, schema_editor) -> None:
    apps.get_model("auth", "Group").objects.filter(name__in=[VIEWER, OPERATOR]).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("accounts", "0002_service_credentials_signing_keys"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
        ("controllers", "0006_operator_permissions"),
        ("audit", "0004_operator_permissions"),
        ("meetings", "0001_initial"),
    ]

    operations = [migrations.RunPython(operator_groups_sync, operator_groups_remove)]
