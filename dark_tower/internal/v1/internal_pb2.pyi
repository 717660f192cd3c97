from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class HealthStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PENDING: _ClassVar[HealthStatus]
    HEALTHY: _ClassVar[HealthStatus]
    DEGRADED: _ClassVar[HealthStatus]
    UNHEALTHY: _ClassVar[HealthStatus]
    DRAINING: _ClassVar[HealthStatus]

class RejectionReason(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    REJECTION_REASON_UNSPECIFIED: _ClassVar[RejectionReason]
    REJECTION_REASON_AT_CAPACITY: _ClassVar[RejectionReason]
    REJECTION_REASON_DRAINING: _ClassVar[RejectionReason]
    REJECTION_REASON_UNHEALTHY: _ClassVar[RejectionReason]
PENDING: HealthStatus
HEALTHY: HealthStatus
DEGRADED: HealthStatus
UNHEALTHY: HealthStatus
DRAINING: HealthStatus
REJECTION_REASON_UNSPECIFIED: RejectionReason
REJECTION_REASON_AT_CAPACITY: RejectionReason
REJECTION_REASON_DRAINING: RejectionReason
REJECTION_REASON_UNHEALTHY: RejectionReason

class ControllerCapacity(_message.Message):
    __slots__ = ("max_meetings", "current_meetings", "max_participants", "current_participants")
    MAX_MEETINGS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_MEETINGS_FIELD_NUMBER: _ClassVar[int]
    MAX_PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    CURRENT_PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    max_meetings: int
    current_meetings: int
    max_participants: int
    current_participants: int
    def __init__(self, max_meetings: _Optional[int] = ..., current_meetings: _Optional[int] = ..., max_participants: _Optional[int] = ..., current_participants: _Optional[int] = ...) -> None: ...

class RegisterMCRequest(_message.Message):
    __slots__ = ("id", "region", "grpc_endpoint", "webtransport_endpoint", "max_meetings", "max_participants")
    ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    GRPC_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    WEBTRANSPORT_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MAX_MEETINGS_FIELD_NUMBER: _ClassVar[int]
    MAX_PARTICIPANTS_FIELD_NUMBER: _ClassVar[int]
    id: str
    region: str
    grpc_endpoint: str
    webtransport_endpoint: str
    max_meetings: int
    max_participants: int
    def __init__(self, id: _Optional[str] = ..., region: _Optional[str] = ..., grpc_endpoint: _Optional[str] = ..., webtransport_endpoint: _Optional[str] = ..., max_meetings: _Optional[int] = ..., max_participants: _Optional[int] = ...) -> None: ...

class RegisterMCResponse(_message.Message):
    __slots__ = ("accepted", "message", "fast_heartbeat_interval_ms", "comprehensive_heartbeat_interval_ms")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    FAST_HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    COMPREHENSIVE_HEARTBEAT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    fast_heartbeat_interval_ms: int
    comprehensive_heartbeat_interval_ms: int
    def __init__(self, accepted: _Optional[bool] = ..., message: _Optional[str] = ..., fast_heartbeat_interval_ms: _Optional[int] = ..., comprehensive_heartbeat_interval_ms: _Optional[int] = ...) -> None: ...

class FastHeartbeatRequest(_message.Message):
    __slots__ = ("controller_id", "capacity", "health")
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    controller_id: str
    capacity: ControllerCapacity
    health: HealthStatus
    def __init__(self, controller_id: _Optional[str] = ..., capacity: _Optional[_Union[ControllerCapacity, _Mapping]] = ..., health: _Optional[_Union[HealthStatus, str]] = ...) -> None: ...

class ComprehensiveHeartbeatRequest(_message.Message):
    __slots__ = ("controller_id", "capacity", "health", "cpu_usage_percent", "memory_usage_percent")
    CONTROLLER_ID_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    controller_id: str
    capacity: ControllerCapacity
    health: HealthStatus
    cpu_usage_percent: float
    memory_usage_percent: float
    def __init__(self, controller_id: _Optional[str] = ..., capacity: _Optional[_Union[ControllerCapacity, _Mapping]] = ..., health: _Optional[_Union[HealthStatus, str]] = ..., cpu_usage_percent: _Optional[float] = ..., memory_usage_percent: _Optional[float] = ...) -> None: ...

class FastHeartbeatResponse(_message.Message):
    __slots__ = ("acknowledged", "timestamp")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    acknowledged: bool
    timestamp: int
    def __init__(self, acknowledged: _Optional[bool] = ..., timestamp: _Optional[int] = ...) -> None: ...

class ComprehensiveHeartbeatResponse(_message.Message):
    __slots__ = ("acknowledged", "timestamp")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    acknowledged: bool
    timestamp: int
    def __init__(self, acknowledged: _Optional[bool] = ..., timestamp: _Optional[int] = ...) -> None: ...

class NotifyMeetingEndedRequest(_message.Message):
    __slots__ = ("meeting_id", "region")
    MEETING_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    meeting_id: str
    region: str
    def __init__(self, meeting_id: _Optional[str] = ..., region: _Optional[str] = ...) -> None: ...

class NotifyMeetingEndedResponse(_message.Message):
    __slots__ = ("acknowledged",)
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    acknowledged: bool
    def __init__(self, acknowledged: _Optional[bool] = ...) -> None: ...

class HeartbeatStreamRequest(_message.Message):
    __slots__ = ("fast", "comprehensive")
    FAST_FIELD_NUMBER: _ClassVar[int]
    COMPREHENSIVE_FIELD_NUMBER: _ClassVar[int]
    fast: FastHeartbeatRequest
    comprehensive: ComprehensiveHeartbeatRequest
    def __init__(self, fast: _Optional[_Union[FastHeartbeatRequest, _Mapping]] = ..., comprehensive: _Optional[_Union[ComprehensiveHeartbeatRequest, _Mapping]] = ...) -> None: ...

class HeartbeatStreamResponse(_message.Message):
    __slots__ = ("fast", "comprehensive")
    FAST_FIELD_NUMBER: _ClassVar[int]
    COMPREHENSIVE_FIELD_NUMBER: _ClassVar[int]
    fast: FastHeartbeatResponse
    comprehensive: ComprehensiveHeartbeatResponse
    def __init__(self, fast: _Optional[_Union[FastHeartbeatResponse, _Mapping]] = ..., comprehensive: _Optional[_Union[ComprehensiveHeartbeatResponse, _Mapping]] = ...) -> None: ...

class RegisterMHRequest(_message.Message):
    __slots__ = ("handler_id", "region", "webtransport_endpoint", "grpc_endpoint", "max_streams")
    HANDLER_ID_FIELD_NUMBER: _ClassVar[int]
    REGION_FIELD_NUMBER: _ClassVar[int]
    WEBTRANSPORT_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    GRPC_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    MAX_STREAMS_FIELD_NUMBER: _ClassVar[int]
    handler_id: str
    region: str
    webtransport_endpoint: str
    grpc_endpoint: str
    max_streams: int
    def __init__(self, handler_id: _Optional[str] = ..., region: _Optional[str] = ..., webtransport_endpoint: _Optional[str] = ..., grpc_endpoint: _Optional[str] = ..., max_streams: _Optional[int] = ...) -> None: ...

class RegisterMHResponse(_message.Message):
    __slots__ = ("accepted", "message", "load_report_interval_ms")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    LOAD_REPORT_INTERVAL_MS_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    message: str
    load_report_interval_ms: int
    def __init__(self, accepted: _Optional[bool] = ..., message: _Optional[str] = ..., load_report_interval_ms: _Optional[int] = ...) -> None: ...

class SendLoadReportRequest(_message.Message):
    __slots__ = ("handler_id", "current_streams", "health", "cpu_usage_percent", "memory_usage_percent", "bandwidth_usage_percent")
    HANDLER_ID_FIELD_NUMBER: _ClassVar[int]
    CURRENT_STREAMS_FIELD_NUMBER: _ClassVar[int]
    HEALTH_FIELD_NUMBER: _ClassVar[int]
    CPU_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    MEMORY_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    BANDWIDTH_USAGE_PERCENT_FIELD_NUMBER: _ClassVar[int]
    handler_id: str
    current_streams: int
    health: HealthStatus
    cpu_usage_percent: float
    memory_usage_percent: float
    bandwidth_usage_percent: float
    def __init__(self, handler_id: _Optional[str] = ..., current_streams: _Optional[int] = ..., health: _Optional[_Union[HealthStatus, str]] = ..., cpu_usage_percent: _Optional[float] = ..., memory_usage_percent: _Optional[float] = ..., bandwidth_usage_percent: _Optional[float] = ...) -> None: ...

class SendLoadReportResponse(_message.Message):
    __slots__ = ("acknowledged", "timestamp")
    ACKNOWLEDGED_FIELD_NUMBER: _ClassVar[int]
    TIMESTAMP_FIELD_NUMBER: _ClassVar[int]
    acknowledged: bool
    timestamp: int
    def __init__(self, acknowledged: _Optional[bool] = ..., timestamp: _Optional[int] = ...) -> None: ...

class MhAssignment(_message.Message):
    __slots__ = ("mh_id", "webtransport_endpoint", "grpc_endpoint")
    MH_ID_FIELD_NUMBER: _ClassVar[int]
    WEBTRANSPORT_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    GRPC_ENDPOINT_FIELD_NUMBER: _ClassVar[int]
    mh_id: str
    webtransport_endpoint: str
    grpc_endpoint: str
    def __init__(self, mh_id: _Optional[str] = ..., webtransport_endpoint: _Optional[str] = ..., grpc_endpoint: _Optional[str] = ...) -> None: ...

class AssignMeetingWithMhRequest(_message.Message):
    __slots__ = ("meeting_id", "mh_assignments", "requesting_gc_id")
    MEETING_ID_FIELD_NUMBER: _ClassVar[int]
    MH_ASSIGNMENTS_FIELD_NUMBER: _ClassVar[int]
    REQUESTING_GC_ID_FIELD_NUMBER: _ClassVar[int]
    meeting_id: str
    mh_assignments: _containers.RepeatedCompositeFieldContainer[MhAssignment]
    requesting_gc_id: str
    def __init__(self, meeting_id: _Optional[str] = ..., mh_assignments: _Optional[_Iterable[_Union[MhAssignment, _Mapping]]] = ..., requesting_gc_id: _Optional[str] = ...) -> None: ...

class AssignMeetingWithMhResponse(_message.Message):
    __slots__ = ("accepted", "rejection_reason")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    REJECTION_REASON_FIELD_NUMBER: _ClassVar[int]
    accepted: bool
    rejection_reason: RejectionReason
    def __init__(self, accepted: _Optional[bool] = ..., rejection_reason: _Optional[_Union[RejectionReason, str]] = ...) -> None: ...
