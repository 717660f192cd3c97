from django.apps import AppConfig


class AccountsConfig(AppConfig):
    name = "accounts"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # What the core runs for this app (darktower.registry).
        from accounts.services.personal_data import api_keys_of_user, oauth_providers_of_user
        from accounts.services.retention import api_keys_prune_expired
        from darktower.registry import personal_data_section_register, retention_job_register

        retention_job_register(name="expired_api_keys", run=api_keys_prune_expired, order=40)
        # What it holds of a user beside the profile (accounts.services.personal_data runs them; the account's
        # own rows are erased there, after every app's step).
        personal_data_section_register(name="oauth_providers", rows=oauth_providers_of_user, order=10)
        personal_data_section_register(name="api_keys", rows=api_keys_of_user, order=20)
