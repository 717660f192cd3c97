from django.apps import AppConfig


class MeetingsConfig(AppConfig):
    name = "meetings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        # What the apps below meetings trigger in it (see controllers.hooks).
        from controllers.hooks import meeting_end_reported_register
        from meetings.services.meetings import meeting_end

        meeting_end_reported_register(meeting_end)
