"""The domain exceptions that services raise; each transport maps them in one place."""

from __future__ import annotations


class DomainError(Exception):
    """Base of every error a service raises on purpose. `code` is stable and machine-readable."""

    code = "error"

    def __init__(self, message: str, *, fields: dict[str, list[str]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.fields = fields or {}


class InvalidInput(DomainError):
    code = "invalid"


class NotFound(DomainError):
    code = "not_found"


class Conflict(DomainError):
    code = "conflict"


class Gone(DomainError):
    code = "gone"


class PermissionDenied(DomainError):
    code = "permission_denied"


class Unauthenticated(DomainError):
    code = "unauthenticated"


class NoCapacity(DomainError):
    code = "no_controller_available"


class NoMediaHandler(NoCapacity):
    code = "no_media_handler_available"


class PlacementBusy(NoCapacity):
    """Another request is placing the meeting and has not finished within the time a join may wait for it."""

    code = "placement_in_progress"
    retry_after_seconds = 1


class Throttled(DomainError):
    code = "throttled"

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds


class ProviderUnavailable(DomainError):
    """An outside service a request depends on (an identity provider) did not answer; a retry may succeed."""

    code = "provider_unavailable"

    def __init__(self, message: str, *, retry_after_seconds: int) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
