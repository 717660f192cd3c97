"""Serializer base for request bodies: unknown fields are an error (400), not silently dropped."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import serializers

# Column bounds, so an oversized number is a 400 here and never a database overflow.
INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


class StrictSerializer(serializers.Serializer):
    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, Mapping):
            writable = {name for name, field in self.fields.items() if not field.read_only}
            unknown = sorted(str(name) for name in data if name not in writable)
            if unknown:
                raise serializers.ValidationError({name: ["Unknown field."] for name in unknown})
        return super().to_internal_value(data)


class EmptyRequest(StrictSerializer):
    """The body of an action without parameters: empty, or an object without fields."""


class StrictBooleanField(serializers.BooleanField):
    """JSON true/false only; DRF's BooleanField also takes "yes", "on", 1."""

    def to_internal_value(self, data: Any) -> bool:
        if not isinstance(data, bool):
            self.fail("invalid", input=data)
        return data


class StrictIntegerField(serializers.IntegerField):
    """JSON integers only; DRF's IntegerField also takes "12", 12.0 and true."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return super().to_internal_value(data)


class StrictCharField(serializers.CharField):
    """JSON strings only; DRF's CharField also turns numbers into strings."""

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        return super().to_internal_value(data)
