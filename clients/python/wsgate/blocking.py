"""The blocking client: the same calls as AsyncClient for code without an
event loop (scripts, threads, WSGI). It runs an AsyncClient on a private
event loop in one background thread, so it speaks the protocol through the
one implementation in aio.py; calls from many threads are pipelined on its
one connection.
"""

from __future__ import annotations

import asyncio
import threading
from typing import List, Sequence

from .aio import DEFAULT_CONTROL, DEFAULT_TIMEOUT, AsyncClient
from .model import Connection, Event, EventResult, Stats


class Client:
    """A blocking client of the control socket at control (ipc://).
    timeout (seconds) bounds each call. Use it as a context manager, or
    call close()."""

    def __init__(self, control: str = DEFAULT_CONTROL, *, timeout: float = DEFAULT_TIMEOUT):
        self._client = AsyncClient(control, timeout=timeout)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="wsgate-client", daemon=True)
        self._thread.start()

    def __enter__(self) -> "Client":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, coro):
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result()

    def close(self) -> None:
        if self._loop.is_closed():
            return
        self._run(self._client.aclose())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join()
        self._loop.close()

    def send_event(self, event: Event) -> EventResult:
        return self._run(self._client.send_event(event))

    def send_batch(self, events: Sequence[Event]) -> List[EventResult]:
        return self._run(self._client.send_batch(events))

    def disconnect(self, user_id: str = "", conn_id: str = "", reason: str = "") -> int:
        return self._run(self._client.disconnect(user_id, conn_id, reason))

    def list_connections(self, user_id: str = "") -> List[Connection]:
        return self._run(self._client.list_connections(user_id))

    def stats(self) -> Stats:
        return self._run(self._client.stats())

    def ping(self) -> None:
        self._run(self._client.ping())
