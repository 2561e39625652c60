"""wsgate_pb2.py is committed; it must be what protoc makes of the schema
now (regenerate with `make python-proto`)."""

import os
import shutil
import subprocess
import tempfile
import unittest

import helpers

SCHEMA_DIR = os.path.join(helpers.REPO, "schema")
COMMITTED = os.path.join(helpers.REPO, "clients", "python", "wsgate", "wsgate_pb2.py")


class GeneratedCodeTest(unittest.TestCase):
    def test_wsgate_pb2_matches_the_schema(self):
        protoc = shutil.which("protoc")
        self.assertIsNotNone(protoc, "protoc is missing (Debian package protobuf-compiler)")
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([protoc, f"--proto_path={SCHEMA_DIR}", f"--python_out={out}", "wsgate.proto"],
                           check=True, cwd=SCHEMA_DIR, timeout=60)
            with open(os.path.join(out, "wsgate_pb2.py"), "rb") as f:
                fresh = f.read()
        with open(COMMITTED, "rb") as f:
            committed = f.read()
        self.assertEqual(committed, fresh,
                         "clients/python/wsgate/wsgate_pb2.py is stale: run `make python-proto` and commit it")


if __name__ == "__main__":
    unittest.main()
