from django.apps import AppConfig


class AuditConfig(AppConfig):
    verbose_name = "Audit and events"
    name = "audit"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # What the core runs for this app (darktower.registry).
        from audit.metrics import outbox_gauges
        from audit.partitions import audit_partitions_prune
        from audit.personal_data import audit_events_of_user, idempotency_keys_erase
        from audit.retention import idempotency_keys_prune_expired, outbox_events_prune_processed
        from darktower.registry import (
            database_gauges_register,
            personal_data_eraser_register,
            personal_data_section_register,
            prune_step_register,
            retention_job_register,
        )

        retention_job_register(name="idempotency_keys", run=idempotency_keys_prune_expired, order=50)
        retention_job_register(name="processed_outbox_events", run=outbox_events_prune_processed, order=60)
        prune_step_register(name="audit_partitions", run=audit_partitions_prune)
        database_gauges_register(name="outbox", gauges=outbox_gauges)
        # What it holds of a user (accounts.services.personal_data runs them).
        personal_data_section_register(name="audit_events", rows=audit_events_of_user, order=60)
        personal_data_eraser_register(name="idempotency_keys", run=idempotency_keys_erase, order=20)
