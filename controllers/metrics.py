"""The fleet's gauges, read from the database at each scrape (registered with darktower.registry by
ControllersConfig.ready())."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

# One statement for both tables: a GROUP BY over rows the scrape reads anyway (tens of thousands at most).
_FLEET_SQL = """
SELECT 'meeting_controller', region, health_status, count(*) FROM meeting_controllers GROUP BY region, health_status
UNION ALL
SELECT 'media_handler', region, health_status, count(*) FROM media_handlers GROUP BY region, health_status
"""


def fleet_gauges(cursor: Any) -> Iterator[Metric]:
    """darktower_fleet_members: registered MCs and MHs by kind, region and health."""
    cursor.execute(_FLEET_SQL)
    members = GaugeMetricFamily(
        "darktower_fleet_members", "Registered controllers and handlers, by kind, region and health",
        labels=["kind", "region", "health"],
    )
    for kind, region, health, count in cursor.fetchall():
        members.add_metric([kind, region, health], count)
    yield members
