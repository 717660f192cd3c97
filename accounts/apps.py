from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # What the core runs for this app (darktower.registry).
        from accounts.services.retention import api_keys_prune_expired
        from darktower.registry import retention_job_register

        retention_job_register(name="expired_api_keys", run=api_keys_prune_expired, order=40)
