from django.db import migrations

# Django creates a varchar_pattern_ops index beside the primary key of a CharField, for LIKE 'prefix%' lookups.
# No query filters member ids by prefix (the admin's search is icontains, which no btree index serves), and
# every heartbeat flush updates each row it writes outside HOT (last_heartbeat_at is indexed), which costs an
# index insert and a WAL record per index per beat: this one took 1.2 ms of a 480-beat flush (EXPLAIN ANALYZE
# at 20,000 MCs, 9.5 -> 8.3 ms). A later AlterField of the primary key would create it again (Django's
# PostgreSQL schema editor does so for CharField keys); drop it again in that migration.
PATTERN_INDEXES = (
    ("meeting_controllers", "controller_id", "meeting_controllers_controller_id_bb18010b_like"),
    ("media_handlers", "handler_id", "media_handlers_handler_id_ed63c37f_like"),
)


class Migration(migrations.Migration):

    dependencies = [
        ("controllers", "0009_members_updated_at_skip_when_now"),
    ]

    operations = [
        migrations.RunSQL(
            sql=f"DROP INDEX IF EXISTS {index}",
            reverse_sql=f"CREATE INDEX IF NOT EXISTS {index} ON {table} ({column} varchar_pattern_ops)",
        )
        for table, column, index in PATTERN_INDEXES
    ]
