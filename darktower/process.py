"""Who this process is, for the rows it writes (`meeting_assignments.assigned_by_gc_id`)."""

from __future__ import annotations

import os

from django.conf import settings

# meeting_assignments.assigned_by_gc_id is varchar(255).
MAX_GC_ID_LENGTH = 255


def gc_id() -> str:
    """This process's id: settings.GC_ID (by default gc-<hostname>) and the pid, read at each call.

    GC_ID names the host or deployment, which every gunicorn worker and every gRPC server process on it
    shares; the pid tells them apart. It is read at use time, never cached at import, because gunicorn
    imports the application in the master and then forks the workers.
    """
    suffix = f"-{os.getpid()}"
    return settings.GC_ID[: MAX_GC_ID_LENGTH - len(suffix)] + suffix
