from django.apps import AppConfig


class ControllersConfig(AppConfig):
    name = "controllers"
    default_auto_field = "django.db.models.BigAutoField"
