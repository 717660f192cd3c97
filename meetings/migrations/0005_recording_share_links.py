"""Recording share links that can end: only the SHA-256 of a link's token is stored (share_token_hash, unique),
every share has an end (share_expires_at), and a CHECK keeps a share whole or absent.

Tokens already in the database were stored in plain text, without an end. Forwards, a shared recording's token
is replaced by its hash (its link keeps working) and given the default lifetime (RECORDING_SHARE_DEFAULT_SECONDS
when the migration runs), so no legacy link lives for ever; a token on an unshared row opens nothing and is
dropped with the column; a row marked public without a token is unshared. Backwards, a hash cannot give its
token back: every recording is unshared (the hosts share again for a new link).

Locks: recordings is not on a hot path. The new columns are nullable without a default (metadata only); the
UPDATE touches shared rows only; the CHECK and the unique index scan the table under their locks once.
"""

from __future__ import annotations

from django.conf import settings
from django.db import migrations, models
from django.db.models import Q

# The updated rows queue checks of the table's deferred foreign keys, and PostgreSQL refuses to ALTER a table
# with pending trigger events: run them now (then defer again, as the keys are declared), before the ALTERs.
FIRE_DEFERRED_CHECKS = ["SET CONSTRAINTS ALL IMMEDIATE", "SET CONSTRAINTS ALL DEFERRED"]
HASH_SHARED_TOKENS = [
    (
        "UPDATE recordings SET share_token_hash = encode(sha256(convert_to(access_token, 'UTF8')), 'hex'), "
        "share_expires_at = now() + make_interval(secs => %s) WHERE is_public AND access_token IS NOT NULL",
        [settings.RECORDING_SHARE_DEFAULT_SECONDS],
    ),
    "UPDATE recordings SET is_public = false WHERE is_public AND access_token IS NULL",
    # DROP COLUMN leaves the values in the rows on disk until each row is rewritten: blank them first, so the
    # plaintext goes with the next vacuum.
    "UPDATE recordings SET access_token = NULL WHERE access_token IS NOT NULL",
    *FIRE_DEFERRED_CHECKS,
]
UNSHARE_ALL = [
    "UPDATE recordings SET is_public = false, share_token_hash = NULL, share_expires_at = NULL "
    "WHERE is_public OR share_token_hash IS NOT NULL OR share_expires_at IS NOT NULL",
    *FIRE_DEFERRED_CHECKS,
]


class Migration(migrations.Migration):
    dependencies = [
        ("meetings", "0004_guests_waiting_room_bans"),
    ]

    operations = [
        migrations.AddField(
            model_name="recording",
            name="share_token_hash",
            field=models.CharField(
                blank=True, max_length=64, null=True,
                db_comment="SHA-256 (hex) of the share link's token; the token itself is never stored. NULL: not "
                "shared",
            ),
        ),
        migrations.AddField(
            model_name="recording",
            name="share_expires_at",
            field=models.DateTimeField(
                blank=True, null=True, db_comment="The share link answers until this time (exclusive). NULL: not shared"
            ),
        ),
        migrations.RunSQL(sql=HASH_SHARED_TOKENS, reverse_sql=UNSHARE_ALL),
        # Comment only: COMMENT ON COLUMN, not the no-op ALTER COLUMN ... TYPE that AlterField would also emit.
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    sql="COMMENT ON COLUMN recordings.is_public IS "
                    "'Shared: its link opens it without signing in until share_expires_at'",
                    reverse_sql="COMMENT ON COLUMN recordings.is_public IS "
                    "'Shared: reachable with access_token without signing in'",
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="recording",
                    name="is_public",
                    field=models.BooleanField(
                        db_comment="Shared: its link opens it without signing in until share_expires_at",
                        db_default=False, default=False,
                    ),
                ),
            ],
        ),
        migrations.RemoveField(model_name="recording", name="access_token"),
        migrations.AlterModelOptions(
            name="recording",
            options={"permissions": [("manage_share_recording", "Can unshare recordings and rotate their share links")]},
        ),
        migrations.AddConstraint(
            model_name="recording",
            constraint=models.CheckConstraint(
                condition=Q(is_public=True, share_token_hash__isnull=False, share_expires_at__isnull=False)
                | Q(is_public=False, share_token_hash__isnull=True, share_expires_at__isnull=True),
                name="recordings_share_complete",
            ),
        ),
        migrations.AddConstraint(
            model_name="recording",
            constraint=models.UniqueConstraint(fields=["share_token_hash"], name="uq_recordings_share_token_hash"),
        ),
    ]
