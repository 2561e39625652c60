"""The bytes of NNG's scalability protocols (SP) over ipc://, as the sidecar
serves them (ipc/sp_wire.h is the C definition of the same format).

A connection starts with each side sending an 8-byte header: 00 'S' 'P' 00,
its protocol number (16 bits, big-endian), 00 00. Then every message is a
frame: type 0x01, a 64-bit big-endian length, that many bytes. A req0
message starts with the request id (32 bits, big-endian, high bit set); the
rep0 reply carries the same word before its body.
"""

from __future__ import annotations

import asyncio
import struct

PROTO_REQ0 = 0x30
PROTO_REP0 = 0x31
PROTO_PUSH0 = 0x50
PROTO_PULL0 = 0x51

HEADER_LEN = 8
FRAME_HEAD_LEN = 9
MSG_TYPE = 0x01

# Pause between two dials while nothing listens (NNG's reconnect time, and
# libwsgate's SP_CONN_RETRY_MS).
RETRY_S = 0.1

# Largest message accepted from the sidecar: a ConnectionList of tens of
# thousands of connections is a few MiB; this only stops a broken peer from
# making us allocate without bound (libwsgate's CLIENT_RECV_MAX).
RECV_MAX = 64 * 1024 * 1024

_FRAME_HEAD = struct.Struct(">BQ")


class WireError(Exception):
    """The peer does not speak the expected SP protocol."""


def header(proto: int) -> bytes:
    """The header a side speaking proto sends."""
    return bytes((0, ord("S"), ord("P"), 0, proto >> 8, proto & 0xFF, 0, 0))


def frame(body: bytes) -> bytes:
    """One message frame carrying body."""
    return _FRAME_HEAD.pack(MSG_TYPE, len(body)) + body


def req_id_word(request_id: int) -> bytes:
    """The req0 backtrace word of a request: its low 32 bits with the high
    bit set, as libwsgate derives it from wsgate.v1.Request.request_id."""
    return struct.pack(">I", (request_id & 0xFFFFFFFF) | 0x80000000)


def ipc_path(url: str) -> str:
    """The socket path of an ipc:// URL (the only transport served)."""
    if not isinstance(url, str) or not url.startswith("ipc://") or len(url) == 6:
        raise ValueError(f"not an ipc:// URL: {url!r}")
    path = url[6:]
    if len(path.encode()) >= 108:  # sizeof(sun_path)
        raise ValueError(f"socket path too long: {path!r}")
    return path


async def dial(path: str, proto: int, peer: int):
    """Connects to the socket at path and exchanges SP headers (ours: proto;
    theirs must be peer). (reader, writer), or OSError/WireError."""
    reader, writer = await asyncio.open_unix_connection(path)
    try:
        writer.write(header(proto))
        theirs = await reader.readexactly(HEADER_LEN)
        if theirs != header(peer):
            raise WireError(f"ipc://{path} does not speak SP protocol {peer:#x}")
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def read_frame(reader: asyncio.StreamReader) -> bytes:
    """The body of the next message frame; IncompleteReadError at EOF,
    WireError for a frame that is not a message or is too long."""
    kind, length = _FRAME_HEAD.unpack(await reader.readexactly(FRAME_HEAD_LEN))
    if kind != MSG_TYPE or length > RECV_MAX:
        raise WireError(f"bad frame (type {kind}, {length} bytes)")
    return await reader.readexactly(length)
