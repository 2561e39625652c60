"""The blocking Client against a real sidecar."""

import signal
import threading
import time
import unittest

from helpers import Sidecar  # first: puts the package on sys.path

import wsgate
from wsgate import Client, Event, EventType


class BlockingClientTest(unittest.TestCase):
    def setUp(self):
        self.sidecar = Sidecar()
        self.addCleanup(self.sidecar.close)
        self.client = Client(self.sidecar.control_url, timeout=10)
        self.addCleanup(self.client.close)

    def test_five_events_reach_the_users_websocket_in_order(self):
        ws = self.sidecar.connect("u1")
        self.addCleanup(ws.sock.close)
        types = [EventType.AGENT_STARTED, EventType.AGENT_THINKING, EventType.TOOL_EXECUTING,
                 EventType.TOOL_COMPLETED, EventType.AGENT_COMPLETED]
        results = [self.client.send_event(Event("u1", t, {"n": i}, run_id="r1")) for i, t in enumerate(types)]
        self.assertEqual([(r.seq, r.connections) for r in results], [(i, 1) for i in range(1, 6)])
        frames = [ws.recv_json() for _ in types]
        self.assertEqual([(f["type"], f["seq"], f["payload"]["n"]) for f in frames],
                         [(t.wire_name, i + 1, i) for i, t in enumerate(types)])

    def test_batch_admin_calls_and_errors(self):
        ws = self.sidecar.connect("u1")
        self.addCleanup(ws.sock.close)
        results = self.client.send_batch([Event("u1", EventType.AGENT_STARTED), Event("", EventType.AGENT_STARTED)])
        self.assertEqual(results[0].seq, 1)
        self.assertIsInstance(results[1].error, wsgate.InvalidArgument)
        self.client.ping()
        self.assertEqual(self.client.stats().connections, 1)
        self.assertEqual([c.conn_id for c in self.client.list_connections("u1")], [ws.hello["conn_id"]])
        with self.assertRaises(wsgate.InvalidArgument) as cm:
            self.client.send_event(Event("u1", EventType.AGENT_STARTED, event_id=""))
        self.assertIn("event_id", str(cm.exception))
        self.assertEqual(self.client.disconnect(conn_id=ws.hello["conn_id"]), 1)

    def test_threads_share_one_pipelined_connection(self):
        seqs, errors = [], []

        def sender():
            try:
                for _ in range(25):
                    seqs.append(self.client.send_event(Event("u1", EventType.AGENT_THINKING)).seq)
            except Exception as e:  # reported below
                errors.append(e)
        threads = [threading.Thread(target=sender) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        self.assertEqual(errors, [])
        self.assertEqual(sorted(seqs), list(range(1, 201)))
        self.assertEqual(self.client._client._dials, 1)

    def test_unavailable_when_the_sidecar_is_down_then_back(self):
        with Client(self.sidecar.control_url, timeout=0.5) as client:
            client.ping()
            self.sidecar.kill()
            start = time.monotonic()
            with self.assertRaises(wsgate.Unavailable):
                client.ping()
            self.assertLess(time.monotonic() - start, 4.5)
            self.sidecar.start()
            client.ping()

    def test_unavailable_when_the_sidecar_does_not_answer(self):
        with Client(self.sidecar.control_url, timeout=0.3) as client:
            self.sidecar.proc.send_signal(signal.SIGSTOP)
            try:
                with self.assertRaises(wsgate.Unavailable):
                    client.ping()
            finally:
                self.sidecar.proc.send_signal(signal.SIGCONT)
            client.ping()

    def test_close_twice_is_harmless(self):
        client = Client(self.sidecar.control_url)
        client.close()
        client.close()


if __name__ == "__main__":
    unittest.main()
