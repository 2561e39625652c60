"""wsgate: the Python client of the wsgate sidecar.

AsyncClient (asyncio) and Client (blocking) send events and admin requests
to the sidecar's control socket; inbound() yields the client messages and
connection notices of its inbound socket. The wire format is NNG's SP over
ipc:// (req0/pull0), spoken here with the standard library; the messages
are schema/wsgate.proto's (wsgate_pb2).
"""

from . import wsgate_pb2
from .aio import DEFAULT_CONTROL, DEFAULT_INBOUND, DEFAULT_TIMEOUT, AsyncClient, inbound
from .blocking import Client
from .errors import (
    Internal,
    InvalidArgument,
    NotFound,
    ProtocolError,
    ResourceExhausted,
    Unavailable,
    WsgateError,
)
from .model import Connection, Event, EventResult, EventType, Stats

__all__ = [
    "AsyncClient",
    "Client",
    "Connection",
    "DEFAULT_CONTROL",
    "DEFAULT_INBOUND",
    "DEFAULT_TIMEOUT",
    "Event",
    "EventResult",
    "EventType",
    "Internal",
    "InvalidArgument",
    "NotFound",
    "ProtocolError",
    "ResourceExhausted",
    "Stats",
    "Unavailable",
    "WsgateError",
    "inbound",
    "wsgate_pb2",
]
