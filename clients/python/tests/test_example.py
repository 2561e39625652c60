"""examples/python_backend.py against a real sidecar: the one-shot mode
(used by the browser test as its backend) and the service mode."""

import os
import subprocess
import sys
import unittest

import helpers
from helpers import Sidecar

EXAMPLE = os.path.join(helpers.REPO, "examples", "python_backend.py")
FIVE = ["agent_started", "agent_thinking", "tool_executing", "tool_completed", "agent_completed"]


class ExampleBackendTest(unittest.TestCase):
    def setUp(self):
        self.sidecar = Sidecar()
        self.addCleanup(self.sidecar.close)

    def run_example(self, *args, timeout=60):
        return subprocess.run([sys.executable, EXAMPLE, *args], capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, "WSGATE_CONTROL": self.sidecar.control_url})

    def test_one_shot_sends_the_five_events_and_exits_0(self):
        ws = self.sidecar.connect("u1")
        self.addCleanup(ws.sock.close)
        out = self.run_example("--user", "u1", "--run", "r42")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertEqual(len(out.stdout.splitlines()), 5, out.stdout)
        frames = [ws.recv_json() for _ in FIVE]
        self.assertEqual([(f["type"], f["seq"], f["run_id"]) for f in frames],
                         [(t, i + 1, "r42") for i, t in enumerate(FIVE)])

    def test_one_shot_exits_1_when_the_sidecar_is_down(self):
        self.sidecar.kill()
        out = self.run_example("--user", "u1", "--timeout", "0.3")
        self.assertEqual(out.returncode, 1)
        self.assertIn("Unavailable", out.stderr)

    def test_service_runs_the_agent_for_a_client_frame(self):
        proc = subprocess.Popen([sys.executable, EXAMPLE, "--control", self.sidecar.control_url,
                                 "--inbound", self.sidecar.inbound_url],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.addCleanup(proc.kill)
        ws = self.sidecar.connect("u2")
        self.addCleanup(ws.sock.close)
        ws.send_text('{"type":"run","run_id":"r7"}')
        frames = [ws.recv_json() for _ in FIVE]
        self.assertEqual([(f["type"], f["run_id"], f["user_id"]) for f in frames], [(t, "r7", "u2") for t in FIVE])
        proc.terminate()
        stdout, _ = proc.communicate(timeout=10)
        self.assertIn(f"inbound opened conn={ws.hello['conn_id']} user=u2", stdout)
        self.assertIn('inbound client_message conn=', stdout)


if __name__ == "__main__":
    unittest.main()
