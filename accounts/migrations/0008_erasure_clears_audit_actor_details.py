"""When a user is deleted, the audit rows they acted in keep no personal data.

The append-only trigger of audit_logs (audit migration 0006) lets exactly one UPDATE through: the foreign key's own
ON DELETE SET NULL of actor_user_id, once the user is gone. That UPDATE now also clears what else in the row came
from the user: the address and user agent of their requests, and for login events (target_type login_email) the
keyed hash of their email in target_id. Every other column stays as it was, and every other UPDATE is still
refused. Deleting a user is what erasure does (accounts.services.personal_data), so the rule is the accounts app's
to state; the trigger function is replaced in place (no lock on audit_logs: the trigger itself is unchanged).
"""

from django.db import migrations

from darktower.migration import SafeMigration

_FUNCTION = """
CREATE OR REPLACE FUNCTION audit_logs_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    -- The foreign key's ON DELETE SET NULL, and nothing else: see audit migration 0006 for the rule.
    IF TG_OP = 'UPDATE'
       AND pg_trigger_depth() > 1
       AND OLD.actor_user_id IS NOT NULL AND NEW.actor_user_id IS NULL
       AND to_jsonb(NEW) - 'actor_user_id' = to_jsonb(OLD) - 'actor_user_id'
       AND NOT EXISTS (SELECT FROM users WHERE user_id = OLD.actor_user_id)
    THEN{clear}
        RETURN NEW;
    END IF;
    RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation',
              HINT = 'Retention detaches and drops whole monthly partitions.';
END
$$;
"""

# The deleted user's details in the rows they acted in (see the docstring).
_CLEAR = """
        NEW.ip_address := NULL;
        NEW.user_agent := NULL;
        IF OLD.target_type = 'login_email' THEN
            NEW.target_id := NULL;
        END IF;"""


class Migration(SafeMigration):

    dependencies = [
        ("accounts", "0006_verbose_names"),
        ("audit", "0007_verbose_names"),
    ]

    operations = [
        migrations.RunSQL(sql=_FUNCTION.format(clear=_CLEAR), reverse_sql=_FUNCTION.format(clear="")),
    ]
