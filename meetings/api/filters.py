"""Query-string filters of the list endpoints (django-filter); an invalid value answers 400."""

from __future__ import annotations

import django_filters

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
