from django.apps import AppConfig


class ControllersConfig(AppConfig):
    name = "controllers"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # What the core runs for this app (darktower.registry).
        from audit.relay import relay_effect_register
        from controllers.capacity_cache import CONTROLLER_AGGREGATES, capacity_queue_for
        from controllers.metrics import fleet_gauges
        from controllers.services.transitions import health_transitions_prune
        from darktower.registry import database_gauges_register, retention_job_register

        retention_job_register(name="health_transitions", run=health_transitions_prune, order=70)
        database_gauges_register(name="fleet", gauges=fleet_gauges)
        # What the outbox relay does with events about controllers (audit sits below controllers).
        relay_effect_register(name="capacity_cache", aggregate_types=CONTROLLER_AGGREGATES, prepare=capacity_queue_for)
