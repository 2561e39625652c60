"""Test helpers: a real wsgate sidecar process (Sidecar), a minimal
blocking WebSocket client (WsClient) and polling with a deadline (wait_for).

The sidecar binary comes from WSGATE_BUILD_DIR (default: the repository's
build/). Every wait is bounded; nothing sleeps to synchronise.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
sys.path.insert(0, os.path.dirname(HERE))  # clients/python: the package

BUILD_DIR = os.path.abspath(os.environ.get("WSGATE_BUILD_DIR", os.path.join(REPO, "build")))
WSGATE_BIN = os.path.join(BUILD_DIR, "wsgate")
WSGATECTL_BIN = os.path.join(BUILD_DIR, "wsgatectl")

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0


def wait_for(cond, timeout=10.0, what="condition"):
    """Polls cond() until it returns a true value (returned) or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        value = cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.01)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Sidecar:
    """A wsgate process on a private temporary directory (secret, sockets,
    database, audit key, log), restartable on the same paths and port."""

    def __init__(self, *extra_args: str):
        for exe in (WSGATE_BIN, WSGATECTL_BIN):
            if not os.access(exe, os.X_OK):
                raise RuntimeError(f"{exe} is missing: build first (make build) or set WSGATE_BUILD_DIR")
        self.dir = tempfile.mkdtemp(prefix="wsgate-py-")
        self.secret_path = os.path.join(self.dir, "secret")
        with open(os.open(self.secret_path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
            f.write(secrets.token_hex(32) + "\n")
        self.control_url = f"ipc://{self.dir}/control.ipc"
        self.inbound_url = f"ipc://{self.dir}/inbound.ipc"
        self.log_path = os.path.join(self.dir, "sidecar.log")
        self.port = free_port()
        self.extra_args = list(extra_args)
        self.proc = None
        self.start()

    def start(self) -> None:
        argv = [WSGATE_BIN, "--listen", f"127.0.0.1:{self.port}",
                "--control", self.control_url, "--inbound", self.inbound_url,
                "--db", os.path.join(self.dir, "wsgate.db"),
                "--audit-key-file", os.path.join(self.dir, "audit-key"),
                "--jwt-secret-file", self.secret_path, "--log-level", "warn",
                *self.extra_args]
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._healthy():
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                raise RuntimeError(f"sidecar did not start (exit {self.proc.poll()}):\n{self.log_tail()}")
            time.sleep(0.02)

    def _healthy(self) -> bool:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=1)
            conn.request("GET", "/healthz")
            ok = conn.getresponse().status == 200
            conn.close()
            return ok
        except OSError:
            return False

    def kill(self) -> None:
        """SIGKILL: a crash, no goodbye on any socket."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(STOP_TIMEOUT)
        self.proc = None

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def close(self, keep: bool = False) -> None:
        self.stop()
        if keep or os.environ.get("WSGATE_TEST_KEEP"):
            print(f"sidecar directory kept: {self.dir}", file=sys.stderr)
        else:
            shutil.rmtree(self.dir, ignore_errors=True)

    def log_tail(self, n: int = 4000) -> str:
        try:
            with open(self.log_path, "rb") as f:
                return f.read()[-n:].decode(errors="replace")
        except OSError:
            return "(no log)"

    def token(self, user: str) -> str:
        out = subprocess.run([WSGATECTL_BIN, "token", "--user", user, "--ttl", "600",
                              "--secret-file", self.secret_path],
                             check=True, capture_output=True, text=True, timeout=10)
        return out.stdout.strip()

    def connect(self, user: str) -> "WsClient":
        """A WebSocket of user, past its "connected" frame (ws.hello)."""
        return WsClient(self.port, self.token(user))


WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class WsClient:
    """A minimal RFC 6455 client: handshake, masked frames out, unfragmented
    frames in (pings answered). Every read is bounded by a timeout."""

    def __init__(self, port: int, token: str, timeout: float = 10.0):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout)
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(
            f"GET /ws?access_token={token} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Upgrade: websocket\r\nConnection: Upgrade\r\n"
            f"Sec-WebSocket-Key: {key.decode()}\r\nSec-WebSocket-Version: 13\r\n\r\n".encode())
        self.buf = b""
        deadline = time.monotonic() + timeout
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        accept = base64.b64encode(hashlib.sha1(key + WS_GUID).digest())
        if not head.startswith(b"HTTP/1.1 101") or b"Sec-WebSocket-Accept: " + accept not in head:
            raise AssertionError(f"handshake refused: {head!r} (want {accept!r}, key {key!r})")
        self.hello = self.recv_json(timeout)  # {"type":"connected",...}

    def _fill(self, deadline: float) -> None:
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no WebSocket data in time")
        self.sock.settimeout(left)
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("the server closed the connection")
        self.buf += data

    def _take(self, n: int, deadline: float) -> bytes:
        while len(self.buf) < n:
            self._fill(deadline)
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def send(self, opcode: int, payload: bytes) -> None:
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack(">H", n)
        else:
            head += bytes([0x80 | 127]) + struct.pack(">Q", n)
        mask = os.urandom(4)
        self.sock.sendall(head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))

    def send_text(self, text: str) -> None:
        self.send(0x1, text.encode())

    def recv(self, timeout: float = 10.0):
        """(opcode, payload) of the next data or close frame."""
        deadline = time.monotonic() + timeout
        while True:
            b0, b1 = self._take(2, deadline)
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack(">H", self._take(2, deadline))[0]
            elif n == 127:
                n = struct.unpack(">Q", self._take(8, deadline))[0]
            payload = self._take(n, deadline)
            if not b0 & 0x80:
                raise AssertionError("fragmented frames are not handled here")
            if b0 & 0x0F == 0x9:
                self.send(0xA, payload)
                continue
            return b0 & 0x0F, payload

    def recv_json(self, timeout: float = 10.0) -> dict:
        opcode, payload = self.recv(timeout)
        if opcode != 0x1:
            raise AssertionError(f"expected a text frame, got opcode {opcode}: {payload!r}")
        return json.loads(payload)

    def close(self, code: int = 1000) -> None:
        """Sends a close frame and waits (bounded) for the server's."""
        try:
            self.send(0x8, struct.pack(">H", code))
            deadline = time.monotonic() + 5
            while self.recv(max(0.01, deadline - time.monotonic()))[0] != 0x8:
                pass
        except (OSError, EOFError):
            pass
        finally:
            self.sock.close()
