"""`pip install` of clients/python works offline (--no-build-isolation
uses the installed setuptools) and installs a working package."""

import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import helpers

SOURCE = os.path.join(helpers.REPO, "clients", "python")


class PackageTest(unittest.TestCase):
    def test_pip_installs_the_package_offline(self):
        with tempfile.TemporaryDirectory() as tmp:
            # A copy: pip builds in the source tree and leaves build/ there.
            src = os.path.join(tmp, "src")
            shutil.copytree(SOURCE, src, ignore=shutil.ignore_patterns("tests", "__pycache__", "build", "*.egg-info"))
            target = os.path.join(tmp, "site")
            pip = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-index", "--no-deps",
                                  "--no-build-isolation", "--target", target, src],
                                 timeout=300, capture_output=True, text=True)
            self.assertEqual(pip.returncode, 0, pip.stdout + pip.stderr)
            out = subprocess.run(
                [sys.executable, "-c",
                 "import wsgate; print(wsgate.__file__); print(wsgate.wsgate_pb2.Reply.DESCRIPTOR.full_name)"],
                check=True, capture_output=True, text=True, timeout=60,
                env={**os.environ, "PYTHONPATH": target}, cwd=tmp)
            where, name = out.stdout.split()
            self.assertTrue(where.startswith(target), where)
            self.assertEqual(name, "wsgate.v1.Reply")


if __name__ == "__main__":
    unittest.main()
