"""audit_logs is append-only: the database refuses UPDATE, DELETE and TRUNCATE.

The rules, exactly:
- A row trigger on the partitioned parent (PostgreSQL clones it onto every partition, including those attached
  later) refuses every UPDATE and DELETE, with one exception: the foreign key's own ON DELETE SET NULL of
  actor_user_id. PostgreSQL runs that action as an UPDATE from inside the referential-integrity trigger on users,
  so it passes only when all of these hold: it runs nested in another trigger (pg_trigger_depth() > 1), it sets a
  non-null actor_user_id to NULL and changes no other column, and the user it named no longer exists. A
  hand-written `UPDATE audit_logs SET actor_user_id = NULL` runs at the top level, while the user exists: refused.
- A statement trigger refuses TRUNCATE of the parent, which also covers `TRUNCATE users CASCADE`.
- Retention is untouched: DETACH PARTITION and DROP TABLE fire no row trigger (audit/partitions.py drops whole
  months). Operations on one partition by name (DETACH, DROP, TRUNCATE) are not refused: they are DDL of the
  table's owner, who could drop these triggers as well. The guard stops the application and anyone with only
  DML, not the owner.
- audit_logs_ensure_partitions moves the rows the default partition caught for a new month: it disables the row
  trigger on the default partition around that one statement (as the owner, inside its own transaction, so no
  other session sees it off) and only when there are rows to move.
- The test runner's flush (darktower/management/commands/flush.py) likewise disables the TRUNCATE trigger within
  its own transaction.

Django's model declared on_delete=SET_NULL, which makes the ORM issue that UPDATE itself, at the top level and
before deleting the user: refused now. The model says DO_NOTHING and leaves it to the database (state only; the
column and the constraint do not change).
"""

from django.conf import settings
from django.db import migrations, models

# Shared by the forward and the reverse definition of audit_logs_ensure_partitions; {move} is the statement
# that moves the default partition's rows for the new month (see 0001).
_ENSURE_PARTITIONS = """
CREATE OR REPLACE FUNCTION audit_logs_ensure_partitions(
    months_ahead integer,
    start_month date DEFAULT (date_trunc('month', now() AT TIME ZONE 'UTC'))::date
) RETURNS SETOF text
LANGUAGE plpgsql AS $$
DECLARE
    month_start date;
    lower_bound timestamptz;
    upper_bound timestamptz;
    partition_name text;
BEGIN
    IF months_ahead < 0 THEN
        RAISE EXCEPTION 'months_ahead must be >= 0, got %', months_ahead;
    END IF;
    -- One creator at a time: two beats or an operator at a shell must not race on CREATE TABLE.
    PERFORM pg_advisory_xact_lock(hashtext('audit_logs_ensure_partitions'));
    FOR i IN 0..months_ahead LOOP
        month_start := (date_trunc('month', start_month) + make_interval(months => i))::date;
        lower_bound := month_start::timestamp AT TIME ZONE 'UTC';
        upper_bound := (month_start + interval '1 month')::timestamp AT TIME ZONE 'UTC';
        partition_name := format('audit_logs_y%sm%s', to_char(month_start, 'YYYY'), to_char(month_start, 'MM'));
        CONTINUE WHEN to_regclass(partition_name) IS NOT NULL;
        EXECUTE format('CREATE TABLE %I (LIKE audit_logs INCLUDING DEFAULTS INCLUDING CONSTRAINTS)', partition_name);
        -- Rows that fell into the default partition for this month move into the new partition,
        -- otherwise ATTACH would refuse (the default partition may not hold rows of a named range).
{move}
        EXECUTE format(
            'ALTER TABLE audit_logs ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
            partition_name, lower_bound, upper_bound
        );
        RETURN NEXT partition_name;
    END LOOP;
END
$$;
"""

_MOVE = """        EXECUTE format(
            'WITH moved AS (DELETE FROM audit_logs_default WHERE created_at >= %L AND created_at < %L RETURNING *) '
            'INSERT INTO %I SELECT * FROM moved',
            lower_bound, upper_bound, partition_name
        );"""

# A move is no rewrite (every row lands, unchanged, in its month): the append-only trigger is lifted on the default
# partition for this statement only. The ATTACH below locks the default partition ACCESS EXCLUSIVE anyway, so the
# ALTER's lock costs nothing more; when there is nothing to move, neither is taken.
_GUARDED_MOVE = """        IF EXISTS (SELECT FROM audit_logs_default WHERE created_at >= lower_bound AND created_at < upper_bound) THEN
            ALTER TABLE audit_logs_default DISABLE TRIGGER audit_logs_append_only;
            EXECUTE format(
                'WITH moved AS (DELETE FROM audit_logs_default WHERE created_at >= %L AND created_at < %L RETURNING *) '
                'INSERT INTO %I SELECT * FROM moved',
                lower_bound, upper_bound, partition_name
            );
            ALTER TABLE audit_logs_default ENABLE TRIGGER audit_logs_append_only;
        END IF;"""

APPEND_ONLY = """
CREATE FUNCTION audit_logs_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The foreign key's ON DELETE SET NULL, and nothing else: see audit migration 0006 for the rule.
    IF TG_OP = 'UPDATE'
       AND pg_trigger_depth() > 1
       AND OLD.actor_user_id IS NOT NULL AND NEW.actor_user_id IS NULL
       AND to_jsonb(NEW) - 'actor_user_id' = to_jsonb(OLD) - 'actor_user_id'
       AND NOT EXISTS (SELECT FROM users WHERE user_id = OLD.actor_user_id)
    THEN
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Retention detaches and drops whole monthly partitions.';
END
$$;

CREATE TRIGGER audit_logs_append_only BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();

CREATE FUNCTION audit_logs_no_truncate() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: TRUNCATE refused'
        USING ERRCODE = 'restrict_violation',
              HINT = 'Retention detaches and drops whole monthly partitions.';
END
$$;

CREATE TRIGGER audit_logs_no_truncate BEFORE TRUNCATE ON audit_logs
    FOR EACH STATEMENT EXECUTE FUNCTION audit_logs_no_truncate();
"""

DROP_APPEND_ONLY = """
DROP TRIGGER audit_logs_no_truncate ON audit_logs;
DROP FUNCTION audit_logs_no_truncate();
DROP TRIGGER audit_logs_append_only ON audit_logs;
DROP FUNCTION audit_logs_append_only();
"""


class Migration(migrations.Migration):

    dependencies = [
        ("audit", "0005_column_comments"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        # CREATE TRIGGER on the parent takes a SHARE ROW EXCLUSIVE lock on it and its partitions for a catalog change:
        # audit inserts wait for it, briefly; no rows are read or rewritten.
        migrations.RunSQL(APPEND_ONLY, reverse_sql=DROP_APPEND_ONLY),
        migrations.RunSQL(
            _ENSURE_PARTITIONS.format(move=_GUARDED_MOVE), reverse_sql=_ENSURE_PARTITIONS.format(move=_MOVE)
        ),
        migrations.AlterField(
            model_name="auditlog",
            name="actor_user",
            field=models.ForeignKey(
                blank=True, db_column="actor_user_id",
                db_comment="References users(user_id) ON DELETE SET NULL (constraint created in SQL)",
                db_constraint=False, null=True, on_delete=models.deletion.DO_NOTHING, related_name="+",
                to=settings.AUTH_USER_MODEL,
            ),
        ),
    ]
