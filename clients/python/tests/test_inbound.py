"""inbound() against a real sidecar: notices and client frames, and a
sidecar restart."""

import asyncio
import unittest

from helpers import Sidecar  # first: puts the package on sys.path

import wsgate


class InboundTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.sidecar = await asyncio.to_thread(Sidecar)
        self.addCleanup(self.sidecar.close)
        self.inbound = wsgate.inbound(self.sidecar.inbound_url)
        self.addAsyncCleanup(self.inbound.aclose)

    async def next(self, kind, conn_id, timeout=10.0):
        """The next message of that kind for that connection (others of
        an earlier connection are skipped)."""
        async def find():
            async for msg in self.inbound:
                body = msg.WhichOneof("body")
                if body == kind and getattr(msg, body).conn_id == conn_id:
                    return getattr(msg, body)
        return await asyncio.wait_for(find(), timeout)

    async def test_client_frames_and_connection_notices_arrive(self):
        ws = await asyncio.to_thread(self.sidecar.connect, "u1")
        conn_id = ws.hello["conn_id"]
        opened = await self.next("opened", conn_id)
        self.assertEqual(opened.user_id, "u1")
        self.assertGreater(opened.at, 0)
        ws.send_text('{"type":"run","prompt":"hello"}')
        got = await self.next("client_message", conn_id)
        self.assertEqual((got.user_id, got.data), ("u1", b'{"type":"run","prompt":"hello"}'))
        self.assertGreater(got.received_at, 0)
        ws.close(1000)
        closed = await self.next("closed", conn_id)
        self.assertEqual((closed.user_id, closed.code), ("u1", 1000))

    async def test_inbound_reconnects_after_a_sidecar_restart(self):
        ws = await asyncio.to_thread(self.sidecar.connect, "u1")
        await self.next("opened", ws.hello["conn_id"])
        ws.sock.close()
        self.sidecar.kill()
        await asyncio.to_thread(self.sidecar.start)
        ws2 = await asyncio.to_thread(self.sidecar.connect, "u2")
        self.addCleanup(ws2.sock.close)
        ws2.send_text('{"after":"restart"}')
        got = await self.next("client_message", ws2.hello["conn_id"])
        self.assertEqual((got.user_id, got.data), ("u2", b'{"after":"restart"}'))

    async def test_inbound_waits_for_a_sidecar_that_starts_later(self):
        self.sidecar.kill()
        pending = asyncio.ensure_future(self.inbound.__anext__())
        await asyncio.to_thread(self.sidecar.start)
        ws = await asyncio.to_thread(self.sidecar.connect, "u3")
        self.addCleanup(ws.sock.close)
        msg = await asyncio.wait_for(pending, 10)
        self.assertEqual((msg.WhichOneof("body"), msg.opened.conn_id), ("opened", ws.hello["conn_id"]))


if __name__ == "__main__":
    unittest.main()
