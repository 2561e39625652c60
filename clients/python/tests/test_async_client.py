"""AsyncClient against a real sidecar: delivery to a WebSocket, results,
errors, admin calls, pipelining, restarts and timeouts."""

import asyncio
import os
import signal
import time
import unittest

from helpers import Sidecar  # first: puts the package on sys.path

import wsgate
from wsgate import AsyncClient, Event, EventType

FIVE = [EventType.AGENT_STARTED, EventType.AGENT_THINKING, EventType.TOOL_EXECUTING,
        EventType.TOOL_COMPLETED, EventType.AGENT_COMPLETED]


async def poll(cond, timeout=10.0, what="condition"):
    """Awaits cond() (a coroutine function) until it gives a true value."""
    deadline = time.monotonic() + timeout
    while True:
        value = await cond()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.01)


class AsyncClientTest(unittest.IsolatedAsyncioTestCase):
    async def asyncSetUp(self):
        self.sidecar = await asyncio.to_thread(Sidecar)
        self.addCleanup(self.sidecar.close)
        self.client = AsyncClient(self.sidecar.control_url, timeout=10)
        self.addAsyncCleanup(self.client.aclose)

    async def connect(self, user):
        ws = await asyncio.to_thread(self.sidecar.connect, user)
        self.addCleanup(ws.sock.close)
        return ws

    async def test_event_reaches_the_users_websocket(self):
        ws = await self.connect("u1")
        ev = Event("u1", EventType.AGENT_STARTED, {"prompt": "hi"}, run_id="r1", thread_id="t1")
        res = await self.client.send_event(ev)
        self.assertEqual((res.seq, res.connections, res.retained, res.duplicate), (1, 1, False, False))
        frame = ws.recv_json()
        self.assertEqual(frame["type"], "agent_started")
        self.assertEqual(frame["seq"], 1)
        self.assertEqual(frame["event_id"], ev.event_id)
        self.assertEqual((frame["user_id"], frame["run_id"], frame["thread_id"]), ("u1", "r1", "t1"))
        self.assertEqual(frame["payload"], {"prompt": "hi"})

    async def test_five_critical_events_arrive_in_order(self):
        ws = await self.connect("u1")
        seqs = [(await self.client.send_event(Event("u1", t, run_id="r1"))).seq for t in FIVE]
        self.assertEqual(seqs, [1, 2, 3, 4, 5])
        frames = [ws.recv_json() for _ in FIVE]
        self.assertEqual([f["type"] for f in frames], [t.wire_name for t in FIVE])
        self.assertEqual([f["seq"] for f in frames], [1, 2, 3, 4, 5])

    async def test_event_for_a_user_without_connection_is_retained(self):
        res = await self.client.send_event(Event("u9", EventType.AGENT_STARTED))
        self.assertEqual((res.seq, res.connections, res.retained), (1, 0, True))
        ws = await self.connect("u9")
        self.assertEqual(ws.recv_json()["seq"], 1)

    async def test_send_batch_gives_a_result_per_event_in_order(self):
        ws = await self.connect("u1")
        events = [Event("u1", EventType.AGENT_STARTED),
                  Event("u1", EventType.CUSTOM),  # no custom_type: refused alone
                  Event("u1", EventType.CUSTOM, {"pct": 50}, custom_type="progress")]
        results = await self.client.send_batch(events)
        self.assertEqual(len(results), 3)
        self.assertTrue(results[0].ok)
        self.assertIsInstance(results[1].error, wsgate.InvalidArgument)
        self.assertIn("custom_type", str(results[1].error))
        self.assertTrue(results[2].ok)
        self.assertEqual([results[0].seq, results[2].seq], [1, 2])
        frames = [ws.recv_json(), ws.recv_json()]
        self.assertEqual([(f["type"], f["seq"]) for f in frames], [("agent_started", 1), ("progress", 2)])
        self.assertEqual(frames[1]["payload"], {"pct": 50})

    async def test_repeated_event_id_is_a_duplicate_with_its_first_seq(self):
        ws = await self.connect("u1")
        ev = Event("u1", EventType.AGENT_STARTED, event_id="e-once")
        first = await self.client.send_event(ev)
        again = await self.client.send_event(ev)
        self.assertFalse(first.duplicate)
        self.assertTrue(again.duplicate)
        self.assertEqual(again.seq, first.seq)
        self.assertEqual(again.connections, 0)
        await self.client.send_event(Event("u1", EventType.AGENT_THINKING))
        # The duplicate was not delivered: the next frame is the next event.
        self.assertEqual([ws.recv_json()["seq"], ws.recv_json()["seq"]], [1, 2])

    async def test_invalid_argument_names_the_field(self):
        with self.assertRaises(wsgate.InvalidArgument) as cm:
            await self.client.send_event(Event("", EventType.AGENT_STARTED))
        self.assertIn("user_id", str(cm.exception))
        self.assertIsInstance(cm.exception, wsgate.WsgateError)
        with self.assertRaises(wsgate.InvalidArgument) as cm:
            await self.client.send_event(Event("u1", EventType.AGENT_STARTED, b"{not json"))
        self.assertIn("payload_json", str(cm.exception))
        with self.assertRaises(wsgate.InvalidArgument):
            await self.client.disconnect()  # neither user nor connection

    async def test_list_connections_stats_ping_disconnect(self):
        ws1 = await self.connect("u1")
        await self.connect("u2")
        await self.client.ping()
        conns = await self.client.list_connections("u1")
        self.assertEqual([(c.conn_id, c.user_id) for c in conns], [(ws1.hello["conn_id"], "u1")])
        self.assertGreater(conns[0].opened_at, 0)
        self.assertEqual(sorted(c.user_id for c in await self.client.list_connections()), ["u1", "u2"])
        stats = await self.client.stats()
        self.assertEqual((stats.connections, stats.users), (2, 2))
        self.assertTrue(stats.version)
        # One pod: no cluster to report.
        self.assertEqual((stats.cluster, stats.node_id, stats.cluster_position), (False, "", 0))
        self.assertEqual(await self.client.disconnect("u1", reason="bye"), 1)
        opcode, payload = ws1.recv()
        self.assertEqual((opcode, int.from_bytes(payload[:2], "big")), (0x8, 4003))

        async def u1_gone():
            return await self.client.list_connections("u1") == []
        await poll(u1_gone, what="u1's connection to close")
        self.assertEqual(await self.client.disconnect("u1"), 0)

    async def test_hundred_concurrent_sends_are_pipelined_on_one_connection(self):
        ws = await self.connect("u1")
        events = [Event("u1", EventType.AGENT_THINKING, {"i": i}) for i in range(100)]
        results = await asyncio.gather(*(self.client.send_event(e) for e in events))
        self.assertEqual([r.seq for r in results], list(range(1, 101)))
        self.assertEqual(self.client._dials, 1)
        frames = [ws.recv_json() for _ in events]
        self.assertEqual([f["event_id"] for f in frames], [e.event_id for e in events])

    async def test_replies_are_matched_to_calls_whatever_their_order(self):
        # A Ping is answered as it is read, an event only after its commit:
        # the replies come back in another order than the requests left.
        calls = []
        for i in range(20):
            calls.append(self.client.send_event(Event("u1", EventType.AGENT_THINKING, {"i": i})))
            calls.append(self.client.ping())
            calls.append(self.client.list_connections("nobody"))
        out = await asyncio.gather(*calls)
        self.assertEqual([r.seq for r in out[0::3]], list(range(1, 21)))
        self.assertEqual(out[1::3], [None] * 20)
        self.assertEqual(out[2::3], [[]] * 20)

    async def test_call_succeeds_across_a_sidecar_restart(self):
        await self.client.ping()
        self.sidecar.kill()
        call = asyncio.ensure_future(self.client.send_event(Event("u1", EventType.AGENT_STARTED)))
        await asyncio.to_thread(self.sidecar.start)
        res = await call
        self.assertEqual(res.seq, 1)
        self.assertEqual(self.client._dials, 2)

    async def test_request_lost_with_its_connection_is_sent_again(self):
        await self.client.ping()
        self.sidecar.proc.send_signal(signal.SIGSTOP)  # reads nothing more
        ev = Event("u1", EventType.AGENT_STARTED)
        call = asyncio.ensure_future(self.client.send_event(ev))

        async def sent():
            return len(self.client._pending) == 1
        await poll(sent, what="the request to be written")
        self.assertFalse(call.done())
        self.sidecar.kill()  # its connection breaks with the request unread
        await asyncio.to_thread(self.sidecar.start)
        res = await call
        self.assertEqual((res.seq, res.duplicate), (1, False))
        ws = await self.connect("u1")
        self.assertEqual(ws.recv_json()["event_id"], ev.event_id)

    async def test_call_times_out_when_the_sidecar_is_down(self):
        client = AsyncClient(self.sidecar.control_url, timeout=0.5)
        self.addAsyncCleanup(client.aclose)
        self.sidecar.kill()
        start = time.monotonic()
        with self.assertRaises(wsgate.Unavailable) as cm:
            await client.ping()
        elapsed = time.monotonic() - start
        self.assertGreaterEqual(elapsed, 0.5)
        self.assertLess(elapsed, 4.5)  # bounded by the timeout, with room for a loaded machine
        self.assertIn("cannot reach", str(cm.exception))

    async def test_call_times_out_when_the_sidecar_does_not_answer(self):
        client = AsyncClient(self.sidecar.control_url, timeout=0.5)
        self.addAsyncCleanup(client.aclose)
        await client.ping()
        self.sidecar.proc.send_signal(signal.SIGSTOP)
        try:
            with self.assertRaises(wsgate.Unavailable) as cm:
                await client.stats()
            self.assertIn("no reply", str(cm.exception))
        finally:
            self.sidecar.proc.send_signal(signal.SIGCONT)
        # The late reply to stats is dropped; the next call gets its own.
        await client.ping()
        self.assertEqual((await client.list_connections()), [])
        self.assertEqual(client._dials, 1)

    async def test_bad_control_url_is_refused(self):
        with self.assertRaises(ValueError):
            AsyncClient("tcp://127.0.0.1:1")
        with self.assertRaises(ValueError):
            AsyncClient("ipc://" + "x" * 200)


class AsyncClientWithoutSidecarTest(unittest.IsolatedAsyncioTestCase):
    async def test_nothing_is_dialed_until_the_first_call(self):
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "no-such.ipc")
        async with AsyncClient("ipc://" + path, timeout=0.2) as client:
            self.assertEqual(client._dials, 0)
            with self.assertRaises(wsgate.Unavailable):
                await client.ping()


if __name__ == "__main__":
    unittest.main()
