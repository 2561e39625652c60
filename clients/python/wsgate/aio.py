"""The asyncio client: AsyncClient for the control socket (req0 to the
sidecar's rep0) and inbound() for the inbound socket (pull0 from its push0).

AsyncClient keeps one connection per client (make one per process) and
pipelines every call on it: each request goes out at once, tagged with its
SP request id, and a reader task hands each reply to the call waiting for
that id, in whatever order replies come. Nothing is dialed until the first
call. As NNG's req0 does, a request whose connection breaks before its
reply is sent again on a new connection (dialed every 100 ms while nothing
listens, e.g. during a sidecar restart) until the call's timeout; event_id
makes that safe for events (a repeat is acknowledged as a duplicate). A
reply that comes after its call timed out is dropped.

As libwsgate does, wsgate.v1.Request.request_id is a per-client counter
and the SP request id is its low 32 bits with the high bit set.
"""

from __future__ import annotations

import asyncio
import logging
from typing import AsyncIterator, Dict, List, Optional, Sequence

from google.protobuf.message import DecodeError

from . import _wire
from . import wsgate_pb2 as pb
from .errors import ProtocolError, Unavailable, error_of
from .model import Connection, Event, EventResult, Stats, from_pb_fields

DEFAULT_CONTROL = "ipc:///tmp/wsgate/control.ipc"
DEFAULT_INBOUND = "ipc:///tmp/wsgate/inbound.ipc"
DEFAULT_TIMEOUT = 5.0

# Output kept unsent past which a call waits for the socket to drain.
_DRAIN_ABOVE = 1024 * 1024

_DIAL_ERRORS = (OSError, _wire.WireError, asyncio.IncompleteReadError)

log = logging.getLogger("wsgate")


class _Conn:
    """One connection to the control socket and the task reading it."""

    def __init__(self, reader, writer, loop):
        self.reader = reader
        self.writer = writer
        self.broken = loop.create_future()  # done once the connection ended
        self.task: Optional[asyncio.Task] = None

    @property
    def alive(self) -> bool:
        return not self.broken.done()


class AsyncClient:
    """A client of the sidecar's control socket at control (an ipc:// URL).
    timeout (seconds) bounds each call, dialing included. Use it as an
    async context manager, or call aclose()."""

    def __init__(self, control: str = DEFAULT_CONTROL, *, timeout: float = DEFAULT_TIMEOUT):
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._url = control
        self._path = _wire.ipc_path(control)
        self._timeout = timeout
        self._next_id = 1
        self._pending: Dict[bytes, asyncio.Future] = {}
        self._conn: Optional[_Conn] = None
        self._dial_lock = asyncio.Lock()
        self._dial_error = "nothing dialed yet"
        self._dials = 0  # connections made (for tests)
        self._closed = False

    async def __aenter__(self) -> "AsyncClient":
        return self

    async def __aexit__(self, *exc) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Closes the connection; calls still waiting get Unavailable."""
        self._closed = True
        for fut in self._pending.values():
            if not fut.done():
                fut.set_exception(Unavailable(f"{self._url}: client closed"))
        conn, self._conn = self._conn, None
        if conn is not None and conn.task is not None:
            conn.task.cancel()
            await asyncio.gather(conn.task, return_exceptions=True)

    # --- the calls ---

    async def send_event(self, event: Event) -> EventResult:
        """Sends one event; raises the sidecar's refusal (e.g.
        InvalidArgument naming the field) or Unavailable."""
        rep = await self._call(pb.Request(send_event=pb.SendEvent(event=event.to_pb())))
        if rep.WhichOneof("body") != "event":
            raise ProtocolError("OK reply without event")
        return EventResult.from_pb(rep.event)

    async def send_batch(self, events: Sequence[Event]) -> List[EventResult]:
        """Sends the events in one request: one result per event, in order.
        An event the sidecar refused has result.error set (nothing is
        raised for it); a batch refused whole raises."""
        req = pb.Request(send_batch=pb.SendBatch(events=[e.to_pb() for e in events]))
        rep = await self._call(req)
        if rep.WhichOneof("body") != "batch":
            raise ProtocolError("OK reply without batch")
        if len(rep.batch.results) != len(events):
            raise ProtocolError(
                f"batch reply has {len(rep.batch.results)} results for {len(events)} events"
            )
        return [EventResult.from_pb(r) for r in rep.batch.results]

    async def disconnect(self, user_id: str = "", conn_id: str = "", reason: str = "") -> int:
        """Closes a user's connections, or one connection (both given: that
        connection only if it is that user's). How many were closed."""
        req = pb.Request(disconnect=pb.Disconnect(user_id=user_id, conn_id=conn_id, reason=reason))
        rep = await self._call(req)
        if rep.WhichOneof("body") != "disconnected":
            raise ProtocolError("OK reply without disconnected")
        return rep.disconnected

    async def list_connections(self, user_id: str = "") -> List[Connection]:
        """Live connections, of one user or ("") of all."""
        req = pb.Request(list_connections=pb.ListConnections(user_id=user_id))
        rep = await self._call(req)
        if rep.WhichOneof("body") != "connections":
            raise ProtocolError("OK reply without connections")
        return [from_pb_fields(Connection, c) for c in rep.connections.connections]

    async def stats(self) -> Stats:
        rep = await self._call(pb.Request(get_stats=pb.GetStats()))
        if rep.WhichOneof("body") != "stats":
            raise ProtocolError("OK reply without stats")
        return from_pb_fields(Stats, rep.stats)

    async def ping(self) -> None:
        await self._call(pb.Request(ping=pb.Ping()))

    # --- the transport ---

    async def _call(self, req: pb.Request) -> pb.Reply:
        """One round trip within the timeout: the OK reply, or raises."""
        if self._closed:
            raise RuntimeError("AsyncClient is closed")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout
        req.request_id = self._next_id
        self._next_id += 1
        word = _wire.req_id_word(req.request_id)
        msg = _wire.frame(word + req.SerializeToString())
        fut = loop.create_future()
        self._pending[word] = fut
        try:
            while True:
                conn = self._conn
                if conn is None or not conn.alive:
                    conn = await self._connect(deadline)
                conn.writer.write(msg)
                if conn.writer.transport.get_write_buffer_size() > _DRAIN_ABOVE:
                    await self._drain(conn, deadline)
                await asyncio.wait(
                    (fut, conn.broken),
                    timeout=max(0.0, deadline - loop.time()),
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if fut.done():
                    body = fut.result()  # raises what aclose set
                    break
                if conn.alive:
                    raise Unavailable(f"no reply from {self._url} within {self._timeout} s")
                # The connection broke: send again on a new one (req0).
        finally:
            del self._pending[word]
        return self._check_reply(req, body)

    async def _drain(self, conn: _Conn, deadline: float) -> None:
        """Waits (until the deadline) for the kernel to take our output, so
        that a sidecar that stopped reading does not make us buffer without
        bound."""
        drained = asyncio.ensure_future(conn.writer.drain())
        await asyncio.wait(
            (drained, conn.broken),
            timeout=max(0.0, deadline - asyncio.get_running_loop().time()),
            return_when=asyncio.FIRST_COMPLETED,
        )
        if drained.done():
            drained.exception()  # retrieved: a broken connection is handled by the caller
        else:
            drained.cancel()

    def _check_reply(self, req: pb.Request, body: bytes) -> pb.Reply:
        rep = pb.Reply()
        try:
            rep.ParseFromString(body)
        except DecodeError as e:
            raise ProtocolError(f"undecodable reply from {self._url}: {e}") from None
        if rep.request_id != req.request_id:
            raise ProtocolError(f"reply is for request {rep.request_id}, not {req.request_id}")
        if rep.status != pb.OK:
            raise error_of(rep.status, rep.error)
        return rep

    async def _connect(self, deadline: float) -> _Conn:
        loop = asyncio.get_running_loop()
        try:
            return await asyncio.wait_for(self._dial(), max(0.0, deadline - loop.time()))
        except asyncio.TimeoutError:
            raise Unavailable(
                f"cannot reach {self._url} within {self._timeout} s: {self._dial_error}"
            ) from None

    async def _dial(self) -> _Conn:
        """The live connection, dialing until there is one. One caller dials
        at a time; the others wait their turn in order (asyncio.Lock is
        FIFO), so requests leave in the order their calls began."""
        async with self._dial_lock:
            while self._conn is None or not self._conn.alive:
                if self._closed:
                    raise Unavailable(f"{self._url}: client closed")
                try:
                    reader, writer = await _wire.dial(self._path, _wire.PROTO_REQ0, _wire.PROTO_REP0)
                except _DIAL_ERRORS as e:
                    self._dial_error = str(e) or type(e).__name__
                    await asyncio.sleep(_wire.RETRY_S)
                    continue
                conn = _Conn(reader, writer, asyncio.get_running_loop())
                conn.task = asyncio.ensure_future(self._read_replies(conn))
                self._conn = conn
                self._dials += 1
            return self._conn

    async def _read_replies(self, conn: _Conn) -> None:
        """Hands each reply to the call waiting for its request id."""
        try:
            while True:
                body = await _wire.read_frame(conn.reader)
                fut = self._pending.get(body[:4]) if len(body) >= 4 else None
                if fut is not None and not fut.done():
                    fut.set_result(body[4:])
        except _DIAL_ERRORS:
            pass  # the sidecar left or spoke garbage: calls resend
        finally:
            conn.writer.close()
            if not conn.broken.done():
                conn.broken.set_result(None)
            if self._conn is conn:
                self._conn = None


async def inbound(url: str = DEFAULT_INBOUND) -> AsyncIterator[pb.Inbound]:
    """Yields each wsgate.v1.Inbound the sidecar pushes (body: one of
    client_message, opened, closed), for ever: it dials (again every 100 ms
    while nothing listens) and dials again after a sidecar restart. The
    sidecar keeps messages in its --inbound-buffer meanwhile; a message cut
    off by a restart is lost. Stop it with break (or aclose())."""
    path = _wire.ipc_path(url)
    while True:
        try:
            reader, writer = await _wire.dial(path, _wire.PROTO_PULL0, _wire.PROTO_PUSH0)
        except _DIAL_ERRORS:
            await asyncio.sleep(_wire.RETRY_S)
            continue
        try:
            while True:
                body = await _wire.read_frame(reader)
                msg = pb.Inbound()
                try:
                    msg.ParseFromString(body)
                except DecodeError as e:
                    log.warning("wsgate: skipped an undecodable inbound message: %s", e)
                    continue
                yield msg
        except _DIAL_ERRORS:
            pass  # the sidecar went away: dial again
        finally:
            writer.close()
