"""MC registration schema (seed 000), in the seed's safe order of operations.

1. add nullable columns (updated_at with its trigger, grpc_endpoint, webtransport_endpoint);
2. replace the health constraint with the five-state one and make `pending` the default;
3. backfill grpc_endpoint from the legacy endpoint column;
4. make grpc_endpoint NOT NULL once every row has one;
5. add the partial index for placement and the column comments.
The legacy `endpoint` column stays for compatibility.
"""

import django.db.models.functions.datetime
import django.utils.timezone
import pgtrigger.compiler
import pgtrigger.migrations
from django.db import migrations, models

import darktower.db

# endpoint is TEXT, grpc_endpoint VARCHAR(255) (seed 000). A longer legacy endpoint keeps its full value
# in `endpoint`; grpc_endpoint gets its first 255 characters until the MC re-registers with a valid one.
BACKFILL_GRPC_ENDPOINT = """
UPDATE meeting_controllers SET grpc_endpoint = left(endpoint, 255) WHERE grpc_endpoint IS NULL;
"""


class Migration(migrations.Migration):

    dependencies = [
        ("controllers", "0001_initial"),
    ]

    operations = [
        # 1. Nullable / defaulted columns first.
        migrations.AddField(
            model_name="meetingcontroller",
            name="updated_at",
            field=models.DateTimeField(
                db_comment="Bumped by trigger on every UPDATE, raw SQL included",
                db_default=django.db.models.functions.datetime.Now(),
                default=django.utils.timezone.now,
                editable=False,
            ),
        ),
        pgtrigger.migrations.AddTrigger(
            model_name="meetingcontroller",
            trigger=pgtrigger.compiler.Trigger(
                name="meeting_controllers_touch_updated_at",
                sql=pgtrigger.compiler.UpsertTriggerSql(
                    func="NEW.updated_at = now(); RETURN NEW;",
                    hash="d7e87ab92bf972bfeddfb26ee0122c1238c412a6",
                    operation="UPDATE",
                    pgid="pgtrigger_meeting_controllers_touch_updated_at_65820",
                    table="meeting_controllers",
                    when="BEFORE",
                ),
            ),
        ),
        migrations.AddField(
            model_name="meetingcontroller",
            name="grpc_endpoint",
            field=models.CharField(
                db_comment="gRPC endpoint the GC and other services use to reach this MC", max_length=255, null=True
            ),
        ),
        migrations.AddField(
            model_name="meetingcontroller",
            name="webtransport_endpoint",
            field=models.CharField(
                blank=True,
                db_comment="WebTransport endpoint for client connections; NULL until the MC has one",
                max_length=255,
                null=True,
            ),
        ),
        # 2. Drop the three-state constraint, add the five-state one, `pending` for new rows.
        migrations.RemoveConstraint(
            model_name="meetingcontroller",
            name="valid_health_status",
        ),
        migrations.AddConstraint(
            model_name="meetingcontroller",
            constraint=models.CheckConstraint(
                condition=models.Q(("health_status__in", ["pending", "healthy", "degraded", "unhealthy", "draining"])),
                name="valid_health_status",
            ),
        ),
        migrations.AlterField(
            model_name="meetingcontroller",
            name="health_status",
            field=models.CharField(
                choices=[
                    ("pending", "Pending"),
                    ("healthy", "Healthy"),
                    ("degraded", "Degraded"),
                    ("unhealthy", "Unhealthy"),
                    ("draining", "Draining"),
                ],
                db_comment="pending: registered, not yet verified; healthy; degraded: operational with issues; "
                "unhealthy: not responding to heartbeats; draining: no new meetings, graceful shutdown",
                db_default="pending",
                default="pending",
                max_length=20,
            ),
        ),
        # 3. Backfill. Reversing needs nothing: the column goes away with step 1's reverse.
        migrations.RunSQL(BACKFILL_GRPC_ENDPOINT, reverse_sql=migrations.RunSQL.noop),
        # 4. NOT NULL after the backfill.
        migrations.AlterField(
            model_name="meetingcontroller",
            name="grpc_endpoint",
            field=models.CharField(
                db_comment="gRPC endpoint the GC and other services use to reach this MC", max_length=255
            ),
        ),
        # 5. Placement index and comments.
        migrations.AddIndex(
            model_name="meetingcontroller",
            index=darktower.db.PgIndex(
                condition=models.Q(("health_status__in", ["healthy", "degraded"])),
                fields=["region", "health_status"],
                name="idx_meeting_controllers_available",
            ),
        ),
        migrations.AlterField(
            model_name="meetingcontroller",
            name="endpoint",
            field=models.TextField(db_comment="Legacy endpoint column kept for compatibility; use grpc_endpoint"),
        ),
        migrations.AlterField(
            model_name="meetingcontroller",
            name="last_heartbeat_at",
            field=models.DateTimeField(
                db_comment="Database time of the last heartbeat received",
                db_default=django.db.models.functions.datetime.Now(),
                default=django.utils.timezone.now,
            ),
        ),
    ]
