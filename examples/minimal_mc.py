"""A minimal meeting controller: a service token, RegisterMC, then a FastHeartbeat every few seconds.

    CLIENT_ID=... CLIENT_SECRET=... python examples/minimal_mc.py

The credential comes from `manage.py create_service_credential --scopes mc:register`. Ctrl-C stops it.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import time
import urllib.request
from pathlib import Path

import grpc

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the checked-in stubs, dark_tower/
from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc


def service_token(http: str, client_id: str, client_secret: str) -> str:
    """OAuth 2.0 client credentials, HTTP Basic: the access token (fetch a new one before expires_in runs out)."""
    if not http.startswith(("http://", "https://")):
        raise SystemExit(f"--http must be an http:// or https:// URL, not {http!r}")
    basic = base64.b64encode(f"{client_id}:{client_secret}".encode()).decode()
    request = urllib.request.Request(  # noqa: S310 (the scheme is checked above)
        f"{http}/api/v1/auth/service/token", data=b"grant_type=client_credentials",
        headers={"Authorization": f"Basic {basic}", "Content-Type": "application/x-www-form-urlencoded"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return str(json.load(response)["access_token"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--http", default="http://127.0.0.1:8000", help="the GC's HTTP base URL (token endpoint)")
    parser.add_argument("--grpc", default="127.0.0.1:50051", help="the GC's gRPC address (plaintext, for dev)")
    parser.add_argument("--id", default="mc-example-1")
    parser.add_argument("--region", default="us-east-1")
    parser.add_argument("--beats", type=int, default=0, help="stop after this many heartbeats (0: never)")
    parser.add_argument("--interval", type=float, help="seconds between heartbeats (default: what RegisterMC says)")
    args = parser.parse_args()

    token = service_token(args.http, os.environ["CLIENT_ID"], os.environ["CLIENT_SECRET"])
    auth = (("authorization", f"Bearer {token}"),)
    with grpc.insecure_channel(args.grpc) as channel:
        gc = internal_pb2_grpc.GlobalControllerServiceStub(channel)
        registered = gc.RegisterMC(pb.RegisterMCRequest(
            id=args.id, region=args.region, grpc_endpoint=f"grpc://{args.id}.internal:50052",
            webtransport_endpoint=f"https://{args.id}.internal:4433", max_meetings=100, max_participants=1000,
        ), metadata=auth)
        print(f"registered {args.id} in {args.region}: accepted={registered.accepted}", flush=True)
        interval = args.interval if args.interval is not None else registered.fast_heartbeat_interval_ms / 1000
        beats = 0
        while not args.beats or beats < args.beats:
            if beats:
                time.sleep(interval)
            answer = gc.FastHeartbeat(pb.FastHeartbeatRequest(controller_id=args.id, health=pb.HEALTHY), metadata=auth)
            beats += 1
            print(f"heartbeat {beats}: acknowledged={answer.acknowledged}", flush=True)


if __name__ == "__main__":
    main()
