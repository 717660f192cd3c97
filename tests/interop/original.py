"""Peers that behave as Dark Tower's own services do, for the interoperability tests.

`OriginalMc` is a gRPC server playing a meeting controller built from the original project: it serves
MeetingControllerService.AssignMeetingWithMh and checks the caller's token as that MC's auth layer does, and it
validates meeting and guest tokens as its WebTransport join does. Every rule below is the original's:

- Tokens: a Bearer token of at most 8,192 bytes with three parts; a header whose `alg` is EdDSA and whose `kid`
  is a non-empty string; the key from the JWKS at `jwks_url`, fetched once and kept 300 s (an unknown kid within
  that time is refused without a refetch); the key must be OKP with `alg` EdDSA when present and `x` base64url
  without padding. The claims are checked as jsonwebtoken 9.3's `Validation::new(EdDSA)` does: `exp` required
  and checked with 60 s of leeway, `nbf` not checked, and any parseable `aud` claim refused because no audience
  is configured. Then `iat` may be at most `clock_skew_seconds` (the MC's default: 5) ahead of the MC's clock.
- Claims are deserialised strictly into mirrors of the original's structs (`ServiceClaims`,
  `MeetingTokenClaims`, `GuestTokenClaims`): a missing field or a wrong JSON type fails, as serde does.
- The GC's call needs scope `service.write.mc` (else UNAUTHENTICATED) and `service_type` "global-controller"
  (else PERMISSION_DENIED), both with the message the original uses.
- AssignMeetingWithMh: draining -> DRAINING; meetings at max or participants + 10 over max -> AT_CAPACITY; no
  media handler, or one without a gRPC endpoint -> UNHEALTHY; a meeting it already has -> UNHEALTHY, forgetting
  that meeting's media handlers (the original is not idempotent here); otherwise accepted, one meeting more.
"""

from __future__ import annotations

import base64
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field, fields
from typing import Any

import grpc
import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from dark_tower.internal.v1 import internal_pb2 as pb
from dark_tower.internal.v1 import internal_pb2_grpc

MAX_TOKEN_BYTES = 8192
JWKS_CACHE_SECONDS = 300
EXP_LEEWAY_SECONDS = 60
MC_CLOCK_SKEW_SECONDS = 5
ESTIMATED_PARTICIPANTS_PER_MEETING = 10
ASSIGN_PATH_PREFIX = "/dark_tower.internal.v1.MeetingControllerService/"


class TokenRefused(Exception):
    """The original answers every validation failure with the same status and message."""


# --- mirrors of the original's claim structs (crates/common/src/jwt.rs) --------------------------------------

def _is_i64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _str_list(value: Any) -> bool:
    return isinstance(value, list) and all(isinstance(item, str) for item in value)


@dataclass(frozen=True)
class ServiceClaims:
    sub: str
    exp: int
    iat: int
    scope: str
    service_type: str | None = None

    def has_scope(self, wanted: str) -> bool:
        return wanted in self.scope.split()


@dataclass(frozen=True)
class MeetingTokenClaims:
    sub: str
    token_type: str
    meeting_id: str
    meeting_org_id: str
    participant_type: str  # ParticipantType, lowercase: "member" | "external"
    role: str  # MeetingRole, lowercase: "host" | "participant"
    capabilities: list[str]
    iat: int
    exp: int
    jti: str
    home_org_id: str | None = None


@dataclass(frozen=True)
class GuestTokenClaims:
    sub: str
    token_type: str
    meeting_id: str
    meeting_org_id: str
    participant_type: str
    role: str
    display_name: str
    waiting_room: bool
    capabilities: list[str]
    iat: int
    exp: int
    jti: str


_CHECKS: dict[str, Callable[[Any], bool]] = {
    "str": lambda value: isinstance(value, str),
    "int": _is_i64,
    "bool": lambda value: isinstance(value, bool),
    "list[str]": _str_list,
}
_ENUMS = {
    (MeetingTokenClaims, "participant_type"): {"member", "external"},
    (MeetingTokenClaims, "role"): {"host", "participant"},
}


def deserialize(struct: type, claims: dict[str, Any]) -> Any:
    """serde's derive(Deserialize): every field without a default present with its JSON type; Option fields may
    be missing or null; unknown claims ignored; enum fields one of their variants."""
    values = {}
    for spec in fields(struct):
        type_name = str(spec.type)
        optional = type_name.endswith("| None")
        base = type_name.removesuffix(" | None")
        value = claims.get(spec.name)
        if value is None:
            if optional:
                values[spec.name] = None
                continue
            raise TokenRefused(f"missing field {spec.name}")
        if not _CHECKS[base](value):
            raise TokenRefused(f"invalid type of {spec.name}")
        allowed = _ENUMS.get((struct, spec.name))
        if allowed is not None and value not in allowed:
            raise TokenRefused(f"unknown variant of {spec.name}")
        values[spec.name] = value
    return struct(**values)


# --- the validator (common::jwt::JwtValidator with jsonwebtoken 9.3) ------------------------------------------

@dataclass
class Jwks:
    """The MC's JWKS client: the whole key set kept JWKS_CACHE_SECONDS, no refetch on an unknown kid."""

    url: str
    clock: Callable[[], float] = time.time
    fetches: int = 0
    _keys: dict[str, dict[str, Any]] = field(default_factory=dict)
    _fetched_at: float | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def key(self, kid: str) -> dict[str, Any]:
        with self._lock:
            now = self.clock()
            if self._fetched_at is None or now - self._fetched_at >= JWKS_CACHE_SECONDS:
                with urllib.request.urlopen(self.url, timeout=10) as response:
                    document = json.load(response)
                keys = {}
                for jwk in document["keys"]:
                    if not isinstance(jwk.get("kty"), str) or not isinstance(jwk.get("kid"), str):
                        raise TokenRefused("bad JWKS")
                    keys[jwk["kid"]] = jwk
                self._keys, self._fetched_at = keys, now
                self.fetches += 1
            jwk = self._keys.get(kid)
        if jwk is None:
            raise TokenRefused("key not found")
        return jwk


def _b64url_nopad(text: str) -> bytes:
    if "=" in text:
        raise TokenRefused("padded base64")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def validate(raw: str, jwks: Jwks, struct: type, *, clock_skew_seconds: int = MC_CLOCK_SKEW_SECONDS,
             clock: Callable[[], float] = time.time) -> Any:
    if not raw or len(raw.encode()) > MAX_TOKEN_BYTES or raw.count(".") != 2:
        raise TokenRefused("malformed")
    try:
        header = json.loads(_b64url_nopad(raw.split(".", 1)[0]))
    except ValueError:
        raise TokenRefused("malformed header") from None
    kid = header.get("kid") if isinstance(header, dict) else None
    if not isinstance(kid, str) or not kid:
        raise TokenRefused("missing kid")
    jwk = jwks.key(kid)
    if jwk.get("kty") != "OKP" or jwk.get("alg", "EdDSA") != "EdDSA" or not isinstance(jwk.get("x"), str):
        raise TokenRefused("unusable key")
    public_key = Ed25519PublicKey.from_public_bytes(_b64url_nopad(jwk["x"]))
    if header.get("alg") != "EdDSA":
        raise TokenRefused("algorithm")
    try:
        # Signature only: the registered claims are checked below exactly as jsonwebtoken does.
        claims = jwt.decode(raw, public_key, algorithms=["EdDSA"], options={"verify_exp": False,
                            "verify_nbf": False, "verify_iat": False, "verify_aud": False, "verify_iss": False})
    except jwt.PyJWTError:
        raise TokenRefused("signature") from None
    now = clock()
    if not _is_i64(claims.get("exp")):
        raise TokenRefused("missing exp")
    if claims["exp"] < now - EXP_LEEWAY_SECONDS:
        raise TokenRefused("expired")
    audience = claims.get("aud")
    if isinstance(audience, str) or _str_list(audience):
        raise TokenRefused("audience present but none expected")
    parsed = deserialize(struct, claims)
    if parsed.iat > now + clock_skew_seconds:
        raise TokenRefused("issued in the future")
    return parsed


# --- the MC -------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AssignCall:
    meeting_id: str
    mh_assignments: tuple[tuple[str, str, str], ...]  # (mh_id, webtransport_endpoint, grpc_endpoint)
    requesting_gc_id: str
    claims: ServiceClaims


@dataclass
class McState:
    max_meetings: int = 1000
    max_participants: int = 10_000
    current_participants: int = 0
    draining: bool = False
    # Meetings this MC has accepted, with their media handlers.
    meetings: dict[str, tuple[tuple[str, str, str], ...]] = field(default_factory=dict)


class _AssignmentServicer(internal_pb2_grpc.MeetingControllerServiceServicer):
    def __init__(self, mc: OriginalMc):
        self.mc = mc

    def AssignMeetingWithMh(self, request: pb.AssignMeetingWithMhRequest, context: grpc.ServicerContext) -> Any:
        claims = self.mc.authenticate(context)
        handlers = tuple((a.mh_id, a.webtransport_endpoint, a.grpc_endpoint) for a in request.mh_assignments)
        call = AssignCall(request.meeting_id, handlers, request.requesting_gc_id, claims)
        self.mc.before_answer(call)
        with self.mc.lock:
            self.mc.calls.append(call)
            reason = self.mc.decide(request.meeting_id, handlers)
            if reason is None:
                self.mc.state.meetings[request.meeting_id] = handlers
        return pb.AssignMeetingWithMhResponse(accepted=reason is None,
                                              rejection_reason=reason or pb.REJECTION_REASON_UNSPECIFIED)


class OriginalMc:
    """An original MC's gRPC side on a loopback port. `before_answer(call)` runs in the handler before the MC
    decides (a test blocks it there to hold a call open, or raises to fail it)."""

    def __init__(self, jwks_url: str, *, state: McState | None = None, clock: Callable[[], float] = time.time):
        self.state = state or McState()
        self.jwks = Jwks(jwks_url, clock=clock)
        self.clock = clock
        self.calls: list[AssignCall] = []
        self.refusals: list[tuple[grpc.StatusCode, str]] = []
        self.lock = threading.Lock()
        self.before_answer: Callable[[AssignCall], None] = lambda call: None
        self._server = grpc.server(futures.ThreadPoolExecutor(max_workers=16), options=[("grpc.so_reuseport", 0)])
        internal_pb2_grpc.add_MeetingControllerServiceServicer_to_server(_AssignmentServicer(self), self._server)
        self.port = self._server.add_insecure_port("127.0.0.1:0")

    @property
    def endpoint(self) -> str:
        """As an original MC advertises it (MC_GRPC_ADVERTISE_ADDRESS)."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OriginalMc:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop(grace=0)

    def _refuse(self, context: grpc.ServicerContext, code: grpc.StatusCode, message: str) -> None:
        with self.lock:
            self.refusals.append((code, message))
        context.abort(code, message)

    def authenticate(self, context: grpc.ServicerContext) -> ServiceClaims:
        metadata = dict(context.invocation_metadata())
        header = metadata.get("authorization", "")
        if not header.startswith("Bearer "):
            self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "Invalid token")
        try:
            claims = validate(header[len("Bearer "):], self.jwks, ServiceClaims, clock=self.clock)
        except TokenRefused:
            self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "Invalid token")
        if not claims.has_scope("service.write.mc"):
            self._refuse(context, grpc.StatusCode.UNAUTHENTICATED, "Invalid token")
        if claims.service_type != "global-controller":
            self._refuse(context, grpc.StatusCode.PERMISSION_DENIED, "Access denied")
        return claims

    def decide(self, meeting_id: str, handlers: tuple[tuple[str, str, str], ...]) -> int | None:
        state = self.state
        if state.draining:
            return pb.REJECTION_REASON_DRAINING
        if len(state.meetings) >= state.max_meetings:
            return pb.REJECTION_REASON_AT_CAPACITY
        if state.current_participants + ESTIMATED_PARTICIPANTS_PER_MEETING > state.max_participants:
            return pb.REJECTION_REASON_AT_CAPACITY
        if not handlers or any(not grpc_endpoint for _, _, grpc_endpoint in handlers):
            return pb.REJECTION_REASON_UNHEALTHY
        if meeting_id in state.meetings:
            del state.meetings[meeting_id]
            return pb.REJECTION_REASON_UNHEALTHY
        return None

    def validate_meeting_token(self, raw: str, meeting_id: str) -> MeetingTokenClaims:
        """The WebTransport join's check: a meeting token for this meeting, of a meeting this MC was told of."""
        claims = validate(raw, self.jwks, MeetingTokenClaims, clock=self.clock)
        if claims.token_type != "meeting" or claims.meeting_id != meeting_id:
            raise TokenRefused("not a meeting token for this meeting")
        if meeting_id not in self.state.meetings:
            raise TokenRefused("MhAssignmentMissing")
        return claims

    def validate_guest_token(self, raw: str, meeting_id: str) -> GuestTokenClaims:
        claims = validate(raw, self.jwks, GuestTokenClaims, clock=self.clock)
        if (claims.token_type, claims.participant_type, claims.role) != ("guest", "guest", "guest"):
            raise TokenRefused("not a guest token")
        if claims.meeting_id != meeting_id:
            raise TokenRefused("another meeting")
        return claims


def original_mcs(jwks_url: str, count: int, **kwargs: Any) -> Iterator[list[OriginalMc]]:
    """`count` started MCs, stopped when the generator closes (for fixtures)."""
    mcs = [OriginalMc(jwks_url, **kwargs).start() for _ in range(count)]
    try:
        yield mcs
    finally:
        for mc in mcs:
            mc.stop()
