"""Query-string filters of the fleet listings (django-filter); an invalid value answers 400."""

from __future__ import annotations

import django_filters

from controllers.models import HealthStatus, MediaHandler, MeetingController


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
