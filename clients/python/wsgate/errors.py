"""Errors of wsgate calls: one class per wsgate.v1.Status the sidecar can
answer (Unavailable also stands for no answer within the call's timeout),
plus ProtocolError (an answer that is not a valid reply to the request). All
derive from WsgateError.
"""

from __future__ import annotations

from . import wsgate_pb2 as pb


class WsgateError(Exception):
    """A wsgate call failed; str(err) says why (for a refusal by the
    sidecar: its message, which names the offending field)."""


class InvalidArgument(WsgateError):
    """The sidecar refused the request or event as invalid."""


class ResourceExhausted(WsgateError):
    """The sidecar is overloaded: retry later."""


class NotFound(WsgateError):
    """What the request names does not exist."""


class Internal(WsgateError):
    """The sidecar failed (e.g. its event log could not commit)."""


class Unavailable(WsgateError):
    """Retry later. Either no reply within the call's timeout (the sidecar
    could not be reached, or did not answer), or the sidecar answered
    UNAVAILABLE (it cannot accept events now, e.g. its cluster is
    unreachable). A send may or may not have been accepted; sending the same
    event_id again is safe (a repeat is acknowledged as a duplicate)."""


class ProtocolError(WsgateError):
    """The sidecar's answer is undecodable or not a reply to the request."""


_BY_STATUS = {
    pb.INVALID_ARGUMENT: InvalidArgument,
    pb.RESOURCE_EXHAUSTED: ResourceExhausted,
    pb.NOT_FOUND: NotFound,
    pb.INTERNAL: Internal,
    pb.UNAVAILABLE: Unavailable,
}


def error_of(status: int, message: str) -> WsgateError:
    """The exception for a non-OK wsgate.v1.Status."""
    cls = _BY_STATUS.get(status)
    if cls is None:
        return ProtocolError(f"reply has invalid status {status}")
    return cls(message or pb.Status.Name(status))
