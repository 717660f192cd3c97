"""What the controllers app's doors trigger in the apps above it.

Controllers sit below meetings: nothing here imports meetings. When a controller's door must act on meetings
(a meeting controller reports over gRPC that a meeting ended), the meetings app registers the service that does
it from its AppConfig.ready(), and the door calls it through this module. Before registration (an app that is
not installed), the call fails loudly instead of silently doing nothing.
"""

from __future__ import annotations

import uuid
from typing import Protocol


class MeetingEndReported(Protocol):
    def __call__(self, *, meeting_id: uuid.UUID, region: str, actor_client_id: str | None) -> object: ...


_meeting_end_reported: MeetingEndReported | None = None


def meeting_end_reported_register(handler: MeetingEndReported) -> None:
    """Called once by the app that owns meetings (its AppConfig.ready())."""
    global _meeting_end_reported
    _meeting_end_reported = handler


def meeting_end_reported(*, meeting_id: uuid.UUID, region: str, actor_client_id: str | None) -> None:
    """A meeting controller says `meeting_id` ended in `region` (NotifyMeetingEnded): the registered service
    ends that region's assignment, and the meeting once no region runs it (its errors pass through)."""
    if _meeting_end_reported is None:
        raise RuntimeError("no service registered for a meeting end reported by a controller")
    _meeting_end_reported(meeting_id=meeting_id, region=region, actor_client_id=actor_client_id)
