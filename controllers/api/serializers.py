"""Request and response bodies of the fleet API (controllers.api.fleet)."""

from __future__ import annotations

from rest_framework import serializers

from controllers.models import MediaHandler, MeetingController
from darktower.api.serializers import StrictCharField, StrictIntegerField, StrictSerializer


class DrainRequest(StrictSerializer):
    deadline_seconds = StrictIntegerField(
        min_value=0, max_value=7 * 86400, required=False,
        help_text="Assignments still on the controller after this are ended; default DRAIN_DEFAULT_DEADLINE_SECONDS.",
    )
    target_controller_id = StrictCharField(
        max_length=255, required=False, help_text="Move the controller's meetings to this controller."
    )


class ControllerSerializer(serializers.ModelSerializer):
    load_ratio = serializers.FloatField(source="load", read_only=True, allow_null=True)

    class Meta:
        model = MeetingController
        fields = [
            "controller_id", "region", "grpc_endpoint", "webtransport_endpoint", "health_status",
            "current_meetings", "max_meetings", "load_ratio", "current_participants", "max_participants",
            "cpu_usage_percent", "memory_usage_percent", "last_heartbeat_at", "drain_deadline",
            "drain_target_controller_id", "version", "created_at",
        ]
        read_only_fields = fields


class MediaHandlerSerializer(serializers.ModelSerializer):
    class Meta:
        model = MediaHandler
        fields = [
            "handler_id", "region", "grpc_endpoint", "webtransport_endpoint", "health_status", "current_streams",
            "max_streams", "current_bitrate_mbps", "max_bitrate_mbps", "cpu_usage_percent", "memory_usage_percent",
            "bandwidth_usage_percent", "supports_transcoding", "supports_mixing", "supported_codecs",
            "last_heartbeat_at", "created_at",
        ]
        read_only_fields = fields
