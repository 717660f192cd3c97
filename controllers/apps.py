from django.apps import AppConfig


class ControllersConfig(AppConfig):
    name = "controllers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # What the core runs for this app (darktower.registry).
        from controllers.metrics import fleet_gauges
        from controllers.services.transitions import health_transitions_prune
        from darktower.registry import database_gauges_register, retention_job_register

        retention_job_register(name="health_transitions", run=health_transitions_prune, order=70)
        database_gauges_register(name="fleet", gauges=fleet_gauges)
