"""The outbox's gauges, read from the database at each scrape (registered with darktower.registry by
AuditConfig.ready())."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

# The oldest pending row by id through the partial index idx_outbox_events_pending (ids follow commit order
# closely enough for a lag gauge), and how many are pending.
_OUTBOX_SQL = """
SELECT (SELECT extract(epoch FROM now() - created_at) FROM outbox_events
        WHERE processed_at IS NULL AND failed_at IS NULL ORDER BY id LIMIT 1),
       (SELECT count(*) FROM outbox_events WHERE processed_at IS NULL AND failed_at IS NULL)
"""


def outbox_gauges(cursor: Any) -> Iterator[Metric]:
    """darktower_outbox_lag_seconds and darktower_outbox_pending."""
    cursor.execute(_OUTBOX_SQL)
    lag, pending = cursor.fetchone()
    yield GaugeMetricFamily(
        "darktower_outbox_lag_seconds", "Age of the oldest unprocessed outbox event (0 when none)",
        value=float(lag or 0.0),
    )
    yield GaugeMetricFamily("darktower_outbox_pending", "Unprocessed outbox events", value=float(pending))
