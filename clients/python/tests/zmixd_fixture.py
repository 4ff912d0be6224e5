"""A real zmixd on the demo model for tests outside tests/e2e: the client package's tests
(conftest.py here) and the installed tree's (tests/install/test_install.py). It listens on a
Unix socket and on loopback TCP with a token file."""

import os
import signal
import socket
import subprocess
import time

TOKEN = "zmixd-fixture-token-0123456789"


class Daemon:
    """zmixd and zmix: the programs to run (the build's, or an installed prefix's); env: the
    daemon's environment (default: this process's)."""

    def __init__(self, zmixd, zmix, workdir, env=None):
        workdir = str(workdir)
        demo = os.path.join(workdir, "demo")
        subprocess.run([zmix, "demo-init", demo], check=True, capture_output=True, env=env)
        experts = sorted(os.path.join(demo, "experts", f)
                         for f in os.listdir(os.path.join(demo, "experts")))
        self.socket = os.path.join(workdir, "zmixd.sock")
        self.address = "unix:" + self.socket
        self.token_file = os.path.join(workdir, "token")
        with open(self.token_file, "w") as f:
            f.write(TOKEN + "\n")
        os.chmod(self.token_file, 0o600)
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.tcp = "tcp:127.0.0.1:%d" % s.getsockname()[1]
        self.log = open(os.path.join(workdir, "zmixd.log"), "wb")
        self.proc = subprocess.Popen(
            [zmixd, "--model", os.path.join(demo, "model"), "--experts", ",".join(experts),
             "--cache-dir", os.path.join(workdir, "cache"), "--listen", self.address,
             "--listen", self.tcp, "--token-file", self.token_file, "--workers", "2"],
            stdout=self.log, stderr=self.log, env=env)
        deadline = time.time() + 60
        while not os.path.exists(self.socket):
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError("zmixd did not start: " +
                                   open(os.path.join(workdir, "zmixd.log")).read())
            time.sleep(0.05)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        rc = self.proc.wait(60)
        self.log.close()
        return rc
