from django.apps import AppConfig


class MeetingsConfig(AppConfig):
    name = "meetings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from controllers.hooks import meeting_end_reported_register
        from darktower.registry import retention_job_register
        from meetings.services.meetings import meeting_end
        from meetings.services.retention import assignments_prune_ended, meetings_prune_ended, recordings_prune

        # What the core runs for this app (darktower.registry). Recordings before meetings: a meeting past its
        # retention is kept while it has recordings within theirs.
        retention_job_register(name="recordings", run=recordings_prune, order=10)
        retention_job_register(name="meetings", run=meetings_prune_ended, order=20)
        retention_job_register(name="ended_assignments", run=assignments_prune_ended, order=30)
        # What the apps below meetings trigger in it (controllers.hooks).
        meeting_end_reported_register(meeting_end)
