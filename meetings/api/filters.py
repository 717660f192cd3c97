"""Query-string filters of the list endpoints (django-filter); an invalid value answers 400."""

from __future__ import annotations

import django_filters

from controllers.models import HealthStatus, MediaHandler, MeetingController
from meetings.models import Meeting, MeetingStatus, Recording, RecordingStatus


class MeetingFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=MeetingStatus.choices)

    class Meta:
        model = Meeting
        fields = ["status"]


class RecordingFilter(django_filters.FilterSet):
    status = django_filters.ChoiceFilter(choices=RecordingStatus.choices)

    class Meta:
        model = Recording
        fields = ["status"]


class ControllerFilter(django_filters.FilterSet):
    region = django_filters.CharFilter(max_length=50)
    health_status = django_filters.MultipleChoiceFilter(
        choices=HealthStatus.choices, help_text="Repeat to match several: ?health_status=healthy&health_status=degraded"
    )

    class Meta:
        model = MeetingController
        fields = ["region", "health_status"]


class MediaHandlerFilter(django_filters.FilterSet):
    region = django_filters.CharFilter(max_length=50)
    health_status = django_filters.MultipleChoiceFilter(choices=HealthStatus.choices)

    class Meta:
        model = MediaHandler
        fields = ["region", "health_status"]
