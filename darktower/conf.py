"""Settings read on every heartbeat, cached.

Reading `django.conf.settings.X` goes through LazyObject.__getattribute__, several times the cost of a plain
attribute, and a streamed heartbeat reads several settings on the event loop (bench/FIGURES.md).
hot_setting() keeps each value after its first read. override_settings and pytest-django's
`settings` fixture send setting_changed, which empties the cache. Production settings never change while a
process runs.

A value read while a setting changes in another thread (a test's server thread) is not kept: each change moves
the cache's generation, and a read stores its value only if the generation is the one it started with.
"""

from __future__ import annotations

import threading
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed

_lock = threading.Lock()  # _values' writes and _generation
_values: dict[str, Any] = {}
_generation = 0


def hot_setting(name: str) -> Any:
    """settings.<name>, read once until a setting changes."""
    try:
        return _values[name]
    except KeyError:
        pass
    generation = _generation
    value = getattr(settings, name)
    with _lock:
        if generation == _generation:
            _values[name] = value
    return value


def _forget(**_: Any) -> None:
    global _generation
    with _lock:
        _generation += 1
        _values.clear()


setting_changed.connect(_forget, dispatch_uid="darktower.conf.hot_setting")
