"""Every metric a shipped rule or dashboard panel reads exists in what a running GC exports, so that renaming a
metric (or a label, or a route a query selects) breaks this test instead of an operator's pager.

The servers run as in production, in this process: the HTTP app (pytest-django's live server) and the gRPC server
(tests/grpc's fixture). A little traffic makes the labelled series appear: an MC registers and beats, a user
joins a meeting, a join in a region without MCs is answered 503, a request carries a refused token, the stale
sweep and the outbox relay run once. Then GET /metrics is scraped and compared.
"""

from __future__ import annotations

import re
import urllib.request
from dataclasses import dataclass, field

import pytest
from prometheus_client.parser import text_string_to_metric_families

from audit.tasks import relay_outbox
from controllers.models import HealthStatus
from controllers.tasks import sweep_stale
from dark_tower.internal.v1 import internal_pb2 as pb
from darktower.metrics import TALLIES
from tests.deploy.conftest import dashboard, dashboard_exprs, rules
from tests.factories import make_controller, make_meeting, make_user, user_token

pytestmark = pytest.mark.slow

# Series Prometheus makes itself, not the GC.
PROMETHEUS_MADE = frozenset({"up"})
# Labels Prometheus adds to every series it scrapes, and the bucket bound of histograms.
TARGET_LABELS = frozenset({"instance", "job"})
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
# Labels whose selected values come from the code's routes and method names, not from a fixed vocabulary: a rule
# selecting a value no series has matches nothing, silently.
CHECKED_VALUES = frozenset({"route", "method"})

_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NAME = re.compile(r"(?<![\w:])(darktower[_:][a-zA-Z0-9_:]*|up)(?![\w:(])")
_SELECTOR = re.compile(r"(darktower_[a-z0-9_]+)\s*\{([^}]*)\}")
_MATCHER = re.compile(r'([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*"((?:[^"\\]|\\.)*)"')


@dataclass
class Exported:
    """What one scrape shows: each series name with the label names and values seen on its samples."""

    labels: dict[str, dict[str, set[str]]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Exported:
        exported = cls()
        for family in text_string_to_metric_families(text):
            for suffix in SUFFIXES.get(family.type, ("",)):
                exported.labels.setdefault(family.name + suffix, {})
            for sample in family.samples:
                seen = exported.labels.setdefault(sample.name, {})
                for name, value in sample.labels.items():
                    seen.setdefault(name, set()).add(value)
        return exported


def problems(expr: str, exported: Exported, recorded: set[str]) -> list[str]:
    """What in `expr` a GC does not export: unknown series, unknown labels, route or method values no series has."""
    found = []
    for name in _NAME.findall(_STRING.sub('""', expr)):
        if name in PROMETHEUS_MADE or name in recorded:
            continue
        if ":" in name:
            found.append(f"{name}: no rule records it")
        elif name not in exported.labels:
            found.append(f"{name}: not exported")
    for name, matchers in _SELECTOR.findall(expr):
        labels = exported.labels.get(name)
        if not labels:
            continue  # not exported (reported above), or a family no traffic made a sample of
        for label, operator, value in _MATCHER.findall(matchers):
            if label in TARGET_LABELS or (label == "le" and name.endswith("_bucket")):
                continue
            if label not in labels:
                found.append(f"{name}: no label {label}")
            elif label in CHECKED_VALUES and operator in ("=", "=~") and not any(
                re.fullmatch(value, seen) if operator == "=~" else seen == value for seen in labels[label]
            ):
                found.append(f"{name}: no series with {label}{operator}\"{value}\"")
    return found


def shipped_exprs() -> dict[str, str]:
    """Every PromQL expression shipped in deploy/ (rules, dashboard queries and variables), by where it is."""
    exprs = {rule.get("alert") or rule["record"]: rule["expr"] for rule in rules()}
    exprs.update(dashboard_exprs())
    for variable in dashboard()["templating"]["list"]:
        if variable["type"] == "query":
            exprs[f"dashboard variable {variable['name']}"] = variable["definition"]
    return exprs


def recorded_names() -> set[str]:
    return {rule["record"] for rule in rules() if "record" in rule}


def _post(url: str, token: str, body: bytes = b"{}") -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Authorization": f"Bearer {token}", "Content-Type": "application/json",
    })
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


@pytest.fixture
def exported(live_server, grpc_server, mc_stub, auth) -> Exported:
    registered = mc_stub.RegisterMC(
        pb.RegisterMCRequest(id="mc-metrics-1", region="us-east-1", grpc_endpoint="grpc://mc-metrics-1.internal:50052",
                             webtransport_endpoint="https://mc-metrics-1.internal:4433", max_meetings=50,
                             max_participants=500),
        metadata=auth,
    )
    beat = mc_stub.FastHeartbeat(
        pb.FastHeartbeatRequest(controller_id="mc-metrics-1", health=pb.HEALTHY,
                                capacity=pb.ControllerCapacity(max_meetings=50, max_participants=500)),
        metadata=auth,
    )
    assert registered.accepted and beat.acknowledged
    host = make_user()
    token = user_token(host)
    joined = _post(f"{live_server.url}/api/v1/meetings/{make_meeting(host=host).meeting_code}/join", token)
    # A known region with no placeable MC: the join's 503 (a region nobody registered in is the client's 400).
    make_controller(region="ap-south-1", health=HealthStatus.UNHEALTHY)
    no_capacity = _post(f"{live_server.url}/api/v1/meetings/{make_meeting(host=host).meeting_code}/join", token,
                        b'{"region": "ap-south-1"}')
    refused = _post(f"{live_server.url}/api/v1/meetings/{make_meeting(host=host).meeting_code}/join", "not-a-jwt")
    assert (joined, no_capacity, refused) == (201, 503, 401)
    sweep_stale.apply().get()
    relay_outbox.apply().get()
    TALLIES.publish()  # what the gRPC server tallied since its publisher last ran

    with urllib.request.urlopen(f"{live_server.url}/metrics", timeout=30) as response:
        return Exported.parse(response.read().decode())


def test_every_metric_a_rule_or_a_dashboard_panel_reads_is_exported(exported):
    recorded = recorded_names()
    found = {where: problems(expr, exported, recorded) for where, expr in shipped_exprs().items()}

    assert {where: found for where, found in found.items() if found} == {}


def test_the_comparison_catches_a_renamed_metric_label_or_route(exported):
    """The check itself can fail: what a rename would leave behind is reported."""
    recorded = recorded_names()
    assert problems('sum(rate(darktower_http_requests_total{status="503"}[5m]))', exported, recorded) == []
    assert problems("rate(darktower_http_request_total[5m])", exported, recorded) == [
        "darktower_http_request_total: not exported"
    ]
    assert problems('darktower_fleet_members{kind="meeting_controller",zone="a"}', exported, recorded) == [
        "darktower_fleet_members: no label zone"
    ]
    assert problems('darktower_http_requests_total{route="api/v1/meetings/<code>/join"}', exported, recorded) == [
        'darktower_http_requests_total: no series with route="api/v1/meetings/<code>/join"'
    ]
    assert problems("darktower:no_such:rate5m > 0", exported, recorded) == [
        "darktower:no_such:rate5m: no rule records it"
    ]
    # Series Prometheus makes, labels it adds, and bucket bounds are no rename.
    assert problems('up{job="darktower",instance="gc-1:8000"} == 0', exported, recorded) == []
    assert problems('darktower_sweep_duration_seconds_bucket{le="1.0",instance="a"}', exported, recorded) == []
