"""Bench 4: render time and query count of the fleet dashboard at 100, 1,000 and 10,000 meeting controllers.

The dashboard is the admin changelist of meeting controllers (/admin/controllers/meetingcontroller/: per-region
summary on top, 100 rows a page) and the JSON endpoint its page polls every few seconds for the rows on screen
(/admin/controllers/meetingcontroller/live/?ids=...). Each is requested through Django's test client (the whole
middleware and admin stack, no network) by a logged-in superuser, with DEBUG off as in production; queries
are counted with CaptureQueriesContext, which also gives the time spent in the database.

Set-up per size, in a scratch database: N controllers in four regions with mixed health, half of them running
one meeting (an active assignment each, which the page's correlated count reads), a health transition in the
last hour for 1 % of them (the summary counts those), and a tenth as many media handlers. VACUUM ANALYZE, one
warm-up request per page, then --repeat timed requests (median, p90, max).
"""

from __future__ import annotations

import os
import secrets
import sys
import warnings
from typing import Any

from bench.common import (
    Result,
    Timer,
    argument_parser,
    finish,
    load_note,
    median,
    percentile,
    scratch_database,
    server_version,
    use_django,
)

NAME = "fleet_dashboard"
REGIONS = ("us-east-1", "us-west-2", "eu-west-1", "ap-south-1")
CHANGELIST = "/admin/controllers/meetingcontroller/"
LIVE = "/admin/controllers/meetingcontroller/live/"
HOST = "bench.invalid"

_CONTROLLERS = """
INSERT INTO meeting_controllers
    (controller_id, region, endpoint, grpc_endpoint, max_meetings, max_participants, current_meetings,
     current_participants, cpu_usage_percent, memory_usage_percent, version, health_status, last_heartbeat_at)
SELECT 'mc-' || lpad(i::text, 6, '0'), (%(regions)s::text[])[1 + i %% 4], 'grpc://10.0.' || (i / 250) || '.'
       || (i %% 250) || ':50052', 'grpc://10.0.' || (i / 250) || '.' || (i %% 250) || ':50052', 100, 1000,
       i %% 2, (i %% 2) * 7, 20 + i %% 60, 30 + i %% 50, '1.4.' || (i %% 3),
       (ARRAY['healthy','healthy','healthy','healthy','healthy','healthy','degraded','draining','unhealthy',
              'pending'])[1 + i %% 10],
       now() - (i %% 40) * interval '1 second'
FROM generate_series(1, %(n)s) i
"""
_HANDLERS = """
INSERT INTO media_handlers (handler_id, region, endpoint, max_streams, max_bitrate_mbps, health_status,
                            last_heartbeat_at)
SELECT 'mh-' || lpad(i::text, 6, '0'), (%(regions)s::text[])[1 + i %% 4], 'grpc://10.1.0.1:50053', 500, 1000,
       'healthy', now()
FROM generate_series(1, %(n)s) i
"""
# One meeting per odd-numbered controller, assigned to it.
_MEETINGS = """
INSERT INTO meetings (display_name, meeting_code, created_by_user_id, status, assigned_controller_id,
                      assigned_region)
SELECT 'Bench meeting ' || i, 'bench-' || lpad(i::text, 6, '0'), %(host)s, 'active', mc.controller_id, mc.region
FROM generate_series(1, %(n)s, 2) i
JOIN meeting_controllers mc ON mc.controller_id = 'mc-' || lpad(i::text, 6, '0')
"""
_ASSIGNMENTS = """
INSERT INTO meeting_assignments (meeting_id, meeting_controller_id, region, assigned_at, assigned_by_gc_id)
SELECT meeting_id, assigned_controller_id, assigned_region, now(), 'gc-bench' FROM meetings
"""
_TRANSITIONS = """
INSERT INTO controller_health_transitions
    (component_type, component_id, region, from_status, to_status, reason, actor_type, created_at)
SELECT 'controller', controller_id, region, 'pending', health_status, 'heartbeat', 'system',
       now() - interval '10 minutes'
FROM meeting_controllers WHERE substr(controller_id, 4)::int %% 100 = 0
"""


def _populate(cursor: Any, size: int, host_id: Any) -> None:
    cursor.execute("TRUNCATE meeting_controllers, media_handlers, meetings, controller_health_transitions CASCADE")
    params = {"regions": list(REGIONS), "n": size, "host": host_id}
    cursor.execute(_CONTROLLERS, params)
    cursor.execute(_HANDLERS, {**params, "n": max(1, size // 10)})
    cursor.execute(_MEETINGS, params)
    cursor.execute(_ASSIGNMENTS)
    cursor.execute(_TRANSITIONS, {})


def _measure(client: Any, url: str, params: dict[str, str], repeat: int) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    response = client.get(url, params)  # warm-up: template compilation, permission caches, plans
    if response.status_code != 200:
        raise RuntimeError(f"GET {url} {params} answered {response.status_code}")
    timings, sql_ms, counts = [], [], set()
    for _ in range(repeat):
        with CaptureQueriesContext(connection) as queries, Timer() as timer:
            response = client.get(url, params)
        if response.status_code != 200:
            raise RuntimeError(f"GET {url} {params} answered {response.status_code}")
        timings.append(timer.ms)
        sql_ms.append(sum(float(query["time"]) for query in queries.captured_queries) * 1000)
        counts.add(len(queries))
    return {
        "median_ms": median(timings), "p90_ms": percentile(timings, 90), "max_ms": max(timings),
        "sql_ms": median(sql_ms), "queries": sorted(counts), "kib": len(response.content) / 1024,
        "rows": len(response.json()["items"]) if url == LIVE else response.content.count(b'class="action-select"'),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argument_parser(NAME, __doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=15, help="timed requests per page and size (default 15)")
    args = parser.parse_args(argv)
    sizes = (20, 60) if args.quick else (100, 1_000, 10_000)
    repeat = 1 if args.quick else args.repeat
    # WhiteNoise warns that collectstatic never ran; nothing here serves static files.
    warnings.filterwarnings("ignore", message="No directory at")
    # Production rendering: DEBUG off (no debug cursor outside the capture, cached templates). Set before Django.
    os.environ["DEBUG"] = "0"
    os.environ["SECRET_KEY"] = secrets.token_urlsafe(48)
    os.environ["SIGNING_KEY_ENCRYPTION_KEY"] = secrets.token_urlsafe(48)
    # The test client speaks plain HTTP: no redirect to https.
    os.environ["SECURE_SSL_REDIRECT"] = "0"
    os.environ["LOG_LEVEL"] = "WARNING"

    result = Result(
        name=NAME, title="Bench 4: fleet dashboard",
        headers=["controllers", "page", "rows shown", "queries", "render ms (median)", "p90 ms", "max ms",
                 "of which SQL ms", "KiB"],
    )
    figures: dict[str, dict[str, Any]] = {}
    load_before = os.getloadavg()[0]
    with scratch_database(NAME, prefix=args.db_prefix) as scratch:
        use_django(scratch)
        from django.conf import settings
        from django.db import connection
        from django.test import Client

        from accounts.models import User

        settings.ALLOWED_HOSTS = [HOST]
        admin = User.objects.create_superuser(email="bench-admin@bench.invalid", password=secrets.token_urlsafe(16))
        client = Client(HTTP_HOST=HOST)
        client.force_login(admin)
        for size in sizes:
            with connection.cursor() as cursor:
                _populate(cursor, size, admin.pk)
                cursor.execute("VACUUM ANALYZE")
            first_page = [f"mc-{n:06d}" for n in range(1, 101) if n <= size]
            last_page = str((size - 1) // 100 + 1)
            pages = {
                "changelist, first page": (CHANGELIST, {}),
                "changelist, last page": (CHANGELIST, {"p": last_page}),
                "changelist, region + health filter, search": (
                    CHANGELIST, {"region": "eu-west-1", "health_status__exact": "healthy", "q": "mc-00"}),
                "live JSON, the 100 rows on screen": (LIVE, {"ids": ",".join(first_page)}),
            }
            for page, (url, params) in pages.items():
                measured = _measure(client, url, params, repeat)
                figures[f"{size} {page}"] = measured
                queries = "/".join(str(count) for count in measured["queries"])
                result.add(size, page, measured["rows"], queries, measured["median_ms"], measured["p90_ms"],
                           measured["max_ms"], measured["sql_ms"], measured["kib"])
                print(f"{size:>6} {page:<45} {measured['median_ms']:8.1f} ms {queries} queries", flush=True)
        postgres = server_version(scratch)

    by_page: dict[str, list[tuple[int, dict[str, Any]]]] = {}
    for key, measured in figures.items():
        size, _, page = key.partition(" ")
        by_page.setdefault(page, []).append((int(size), measured))
    growth = []
    for page, series in by_page.items():
        (small, first), (large, last) = series[0], series[-1]
        same = "the same" if first["queries"] == last["queries"] else "a different"
        rows = f"{first['rows']} and {last['rows']} rows shown" if first["rows"] != last["rows"] else (
            f"{last['rows']} rows shown")
        growth.append(f"{page}: {same} number of queries ({'/'.join(map(str, last['queries']))}), "
                      f"{first['median_ms']:,.0f} ms at {small:,} and {last['median_ms']:,.0f} ms at {large:,} "
                      f"controllers ({rows}; SQL {first['sql_ms']:,.0f} and {last['sql_ms']:,.0f} ms)")
    load_after = os.getloadavg()[0]
    result.data.update({"figures": figures, "repeat": repeat, "load_average": [load_before, load_after]})
    result.notes += [
        "Growth from the smallest to the largest fleet: " + "; ".join(growth) + ".",
        "Render = the whole request through Django's test client (middleware, session, admin, template); no "
        "network and no gunicorn. 'of which SQL ms' is the time spent in the database driver for the page's queries: "
        "the rest is Python (the admin's template and each cell's HTML), which grows with the rows on the page, "
        "not with the fleet. The last page pays for its OFFSET in SQL.",
        f"Each figure is over {repeat} requests after one warm-up; DEBUG off. The superuser needs no permission "
        "queries; an operator in a group adds two (tests/controllers/admin/test_query_counts.py pins those counts).",
        load_note(load_before, load_after),
    ]
    finish(result, args, postgres=postgres)
    return 0


if __name__ == "__main__":
    sys.exit(main())
