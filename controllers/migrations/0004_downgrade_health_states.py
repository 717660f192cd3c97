"""Make the five-state health schema reversible on a live database.

Rolling back 0003/0002 re-adds the seed 002 three-state CHECK constraints, which every `pending` or
`draining` row violates (and every new row starts `pending`). This migration changes nothing going
forward; going back it maps those two states to `unhealthy`, the legacy state that receives no
meetings, so the older constraints validate. The two states are lost on downgrade, by necessity.
"""

from django.db import migrations

FORWARD = migrations.RunSQL.noop

TO_LEGACY_STATES = """
UPDATE meeting_controllers SET health_status = 'unhealthy' WHERE health_status IN ('pending', 'draining');
UPDATE media_handlers SET health_status = 'unhealthy' WHERE health_status IN ('pending', 'draining');
"""


class Migration(migrations.Migration):

    dependencies = [
        ("controllers", "0003_registration_columns"),
    ]

    operations = [
        migrations.RunSQL(FORWARD, reverse_sql=TO_LEGACY_STATES),
    ]
