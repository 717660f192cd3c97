"""The in-process cost of one steady heartbeat on the event loop's path, without gRPC, tokens or a database.

Drives what controllers.grpc.guard calls on the loop for a steady FastHeartbeat (the parse of the message into a
Beat, the recorder's in-memory check and coalescing, the answer) in a tight loop: N beats spread over a fleet of
known healthy members, timed with time.perf_counter_ns, median of several runs. The flush thread is never
started, so nothing is written. Not part of `make bench` or `make test`: a before/after figure for a change to
the hot path.

    python -m bench.beat_path_micro [--beats 200000] [--runs 5] [--members 1000]
"""

from __future__ import annotations

import argparse
import inspect
import statistics
import threading
import time

from bench.common import bootstrap

CLIENT_ID = "svc-bench-fleet"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.beat_path_micro", description=__doc__.splitlines()[0])
    parser.add_argument("--beats", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--members", type=int, default=1000)
    args = parser.parse_args()

    bootstrap()
    import django

    django.setup()
    from controllers.grpc.guard import GLOBAL_CONTROLLER_SERVICE
    from controllers.grpc.services import IN_MEMORY_METHODS
    from controllers.heartbeats import controller_heartbeats
    from controllers.models import HealthStatus
    from controllers.services.beats import Beat
    from dark_tower.internal.v1 import internal_pb2 as pb

    recorder = controller_heartbeats
    # Pretend the flush thread runs: the bench measures the request path only.
    recorder._thread = threading.current_thread()
    remember = inspect.signature(recorder.remember).parameters
    ids = [f"mc-bench-{number:05d}" for number in range(args.members)]
    for member_id in ids:
        if "owner" in remember:
            recorder.remember(member_id, HealthStatus.HEALTHY, owner=CLIENT_ID)
        else:
            recorder.remember(member_id, HealthStatus.HEALTHY)
    serve = IN_MEMORY_METHODS[f"/{GLOBAL_CONTROLLER_SERVICE}/FastHeartbeat"]
    takes_client = len(inspect.signature(serve).parameters) > 1
    requests = [
        pb.FastHeartbeatRequest(controller_id=member_id, health=pb.HEALTHY, capacity=pb.ControllerCapacity(
            max_meetings=10, current_meetings=3, max_participants=100, current_participants=30))
        for member_id in ids
    ]
    count = len(requests)

    def run() -> float:
        start = time.perf_counter_ns()
        if takes_client:
            for number in range(args.beats):
                if serve(requests[number % count], CLIENT_ID) is None:
                    raise AssertionError("a steady beat left the in-memory path")
        else:
            for number in range(args.beats):
                if serve(requests[number % count]) is None:
                    raise AssertionError("a steady beat left the in-memory path")
        return (time.perf_counter_ns() - start) / args.beats

    beat_fields = inspect.signature(Beat).parameters
    beats = [
        Beat(member_id, HealthStatus.HEALTHY, {"current_meetings": 3},
             **({"client_id": CLIENT_ID} if "client_id" in beat_fields else {}))
        for member_id in ids
    ]

    def run_recorder() -> float:
        record = recorder.record_in_memory
        start = time.perf_counter_ns()
        for number in range(args.beats):
            if not record(beats[number % count]):
                raise AssertionError("a steady beat left the in-memory path")
        return (time.perf_counter_ns() - start) / args.beats

    for name, timed in (("FastHeartbeat on the loop (parse, recorder, answer)", run),
                        ("HeartbeatRecorder.record_in_memory", run_recorder)):
        timed()  # warm-up
        figures = [timed() for _ in range(args.runs)]
        recorder._pending.clear()
        print(f"{name}: median {statistics.median(figures):.0f} ns per beat "
              f"(runs: {', '.join(f'{figure:.0f}' for figure in figures)}; N={args.beats}, {args.members} members)")


if __name__ == "__main__":
    main()
