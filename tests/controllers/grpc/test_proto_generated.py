"""The checked-in dark_tower/ package is what `make proto` builds from proto/ right now."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.skipif(shutil.which("make") is None, reason="needs make")
def test_checked_in_generated_code_is_current(tmp_path):
    subprocess.run(
        ["make", "--no-print-directory", "-s", "proto", f"PROTO_OUT={tmp_path}"], cwd=ROOT, check=True,
        capture_output=True,
    )
    built = sorted(path.relative_to(tmp_path) for path in tmp_path.rglob("*") if path.is_file())
    assert Path("dark_tower/internal/v1/internal_pb2.py") in built
    stale = [str(path) for path in built if (ROOT / path).read_bytes() != (tmp_path / path).read_bytes()]
    assert not stale, f"run `make proto`: {stale} differ from what proto/ generates"


def test_the_generated_contract_keeps_its_field_numbers():
    from dark_tower.internal.v1 import internal_pb2 as pb

    assert [(v.name, v.number) for v in pb.HealthStatus.DESCRIPTOR.values] == [
        ("PENDING", 0), ("HEALTHY", 1), ("DEGRADED", 2), ("UNHEALTHY", 3), ("DRAINING", 4),
    ]
    fields = {f.name: f.number for f in pb.ComprehensiveHeartbeatRequest.DESCRIPTOR.fields}
    assert fields == {
        "controller_id": 1, "capacity": 2, "health": 3, "cpu_usage_percent": 4, "memory_usage_percent": 5,
    }
    assert pb.DESCRIPTOR.package == "dark_tower.internal.v1"
    assert set(pb.DESCRIPTOR.services_by_name) == {
        "GlobalControllerService", "MediaHandlerRegistryService", "MeetingControllerService",
    }


def test_the_gc_to_mc_assignment_messages_have_the_originals_names_and_numbers():
    from google.protobuf import descriptor_pb2

    from dark_tower.internal.v1 import internal_pb2 as pb

    def numbers(message):
        return {f.name: f.number for f in message.DESCRIPTOR.fields}

    assert [(v.name, v.number) for v in pb.RejectionReason.DESCRIPTOR.values] == [
        ("REJECTION_REASON_UNSPECIFIED", 0), ("REJECTION_REASON_AT_CAPACITY", 1),
        ("REJECTION_REASON_DRAINING", 2), ("REJECTION_REASON_UNHEALTHY", 3),
    ]
    # Field 3 was the primary/backup role: reserved, never reused.
    assert numbers(pb.MhAssignment) == {"mh_id": 1, "webtransport_endpoint": 2, "grpc_endpoint": 4}
    described = descriptor_pb2.DescriptorProto()
    pb.MhAssignment.DESCRIPTOR.CopyToProto(described)
    assert [(r.start, r.end) for r in described.reserved_range] == [(3, 4)]
    assert numbers(pb.AssignMeetingWithMhRequest) == {"meeting_id": 1, "mh_assignments": 2, "requesting_gc_id": 3}
    assert numbers(pb.AssignMeetingWithMhResponse) == {"accepted": 1, "rejection_reason": 2}
    method = pb.DESCRIPTOR.services_by_name["MeetingControllerService"].methods_by_name["AssignMeetingWithMh"]
    assert (method.input_type.name, method.output_type.name) == (
        "AssignMeetingWithMhRequest", "AssignMeetingWithMhResponse",
    )
