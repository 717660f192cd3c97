from django.apps import AppConfig


class MeetingsConfig(AppConfig):
    name = "meetings"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from controllers.hooks import meeting_end_reported_register
        from darktower.registry import (
            personal_data_eraser_register,
            personal_data_section_register,
            retention_job_register,
        )
        from meetings.services.meetings import meeting_end
        from meetings.services.personal_data import (
            meetings_hosted_by_user,
            participations_of_user,
            recordings_of_user,
            user_meetings_erase,
        )
        from meetings.services.retention import assignments_prune_ended, meetings_prune_ended, recordings_prune

        # What the core runs for this app (darktower.registry). Recordings before meetings: a meeting past its
        # retention is kept while it has recordings within theirs.
        retention_job_register(name="recordings", run=recordings_prune, order=10)
        retention_job_register(name="meetings", run=meetings_prune_ended, order=20)
        retention_job_register(name="ended_assignments", run=assignments_prune_ended, order=30)
        # What the apps below meetings trigger in it (controllers.hooks).
        meeting_end_reported_register(meeting_end)
        # What it holds of a user (accounts.services.personal_data runs them).
        personal_data_section_register(name="meetings_hosted", rows=meetings_hosted_by_user, order=30)
        personal_data_section_register(name="participations", rows=participations_of_user, order=40)
        personal_data_section_register(name="recordings", rows=recordings_of_user, order=50)
        personal_data_eraser_register(name="meetings", run=user_meetings_erase, order=10)
