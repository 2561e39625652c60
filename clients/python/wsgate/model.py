"""What backends hand to wsgate calls and get back: the event types, an
event, and the results, as small dataclasses converted from and to the
wsgate.v1 protobuf messages here (and nowhere else).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import uuid
from dataclasses import dataclass, field
from typing import Any, Optional

from . import wsgate_pb2 as pb
from .errors import WsgateError, error_of


class EventType(enum.IntEnum):
    """wsgate.v1.EventType: the five critical events of an agent run, then
    AGENT_ERROR and CUSTOM (named by Event.custom_type)."""

    AGENT_STARTED = pb.AGENT_STARTED
    AGENT_THINKING = pb.AGENT_THINKING
    TOOL_EXECUTING = pb.TOOL_EXECUTING
    TOOL_COMPLETED = pb.TOOL_COMPLETED
    AGENT_COMPLETED = pb.AGENT_COMPLETED
    AGENT_ERROR = pb.AGENT_ERROR
    CUSTOM = pb.CUSTOM

    @property
    def wire_name(self) -> str:
        """The frame's "type" on the WebSocket ("agent_started"; CUSTOM
        frames carry the event's custom_type instead)."""
        return self.name.lower()


def new_event_id() -> str:
    return "e-" + uuid.uuid4().hex


def _payload_bytes(payload: Any) -> bytes:
    # bytes are JSON text, sent verbatim; None is the empty payload ({}).
    if payload is None:
        return b""
    if isinstance(payload, (bytes, bytearray, memoryview)):
        return bytes(payload)
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()


@dataclass(frozen=True)
class Event:
    """One event for one user. payload: bytes are JSON text sent verbatim;
    any other value is encoded with json.dumps; None means {}. event_id
    defaults to a fresh id made when the Event is created, so sending the
    same Event object again (after Unavailable) is a harmless duplicate."""

    user_id: str
    type: EventType
    payload: Any = None
    run_id: str = ""
    thread_id: str = ""
    custom_type: str = ""
    event_id: str = field(default_factory=new_event_id)

    def to_pb(self) -> pb.Event:
        return pb.Event(
            event_id=self.event_id,
            user_id=self.user_id,
            thread_id=self.thread_id,
            run_id=self.run_id,
            type=int(EventType(self.type)),
            custom_type=self.custom_type,
            payload_json=_payload_bytes(self.payload),
        )


@dataclass(frozen=True)
class EventResult:
    """What the sidecar did with one event: its per-user seq, how many live
    connections it was queued to, whether it was retained for a user with
    none, whether its event_id was seen before (then seq is the original's
    and it was not delivered again). In a send_batch result, error is the
    event's refusal (and the other fields are zero); send_event raises it."""

    seq: int
    connections: int
    retained: bool
    duplicate: bool
    error: Optional[WsgateError] = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @classmethod
    def from_pb(cls, r: pb.EventResult) -> "EventResult":
        if r.status != pb.OK:
            return cls(0, 0, False, False, error_of(r.status, r.error))
        return cls(r.seq, r.connections, r.retained, r.duplicate)


def from_pb_fields(cls, msg):
    """A Connection or Stats made of the same-named fields of its message."""
    return cls(**{f.name: getattr(msg, f.name) for f in dataclasses.fields(cls)})


@dataclass(frozen=True)
class Connection:
    """A live WebSocket connection (times: microseconds since the epoch)."""

    conn_id: str
    user_id: str
    opened_at: int
    peer: str
    queued: int
    written: int


@dataclass(frozen=True)
class Stats:
    """wsgate.v1.Stats: the sidecar's counters."""

    uptime_s: int
    connections: int
    users: int
    events_accepted: int
    frames_written: int
    frames_dropped: int
    audit_backlog: int
    version: str
    notices_dropped: int
    storage_failures: int
    storage_error: str
    # The audit chain's committed head: what `wsgatectl verify --head
    # ID:HEX` takes (ID, and the 32 bytes in hex).
    audit_head_id: int
    audit_head_chain: bytes
    # Cluster mode (docs/CLUSTER.md); 0, False and "" on a single pod.
    node_id: str
    cluster: bool
    cluster_available: bool
    cluster_down_ms: int
    cluster_position: int
    cluster_publish_queued: int
    cluster_unavailable_answers: int
