"""Fixtures for the end-to-end tests: a real zmixd on the stories260K model, expert files the
fixture writes itself, and the project's Python client."""

import json
import os
import random
import signal
import socket
import struct
import subprocess
import sys
import time

import pytest

SOURCE_DIR = os.environ.get("ZMIX_SOURCE_DIR",
                            os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
sys.path.insert(0, os.path.join(SOURCE_DIR, "clients", "python"))

from zmix_client import Client  # noqa: E402

SHARED_DIR = os.environ.get("ZMIX_SHARED_DIR", os.path.join(SOURCE_DIR, "..", "shared"))
MODEL_DIR = os.path.join(SHARED_DIR, "models", "stories260K")
ZMIXD = os.environ.get("ZMIXD", "")


def write_safetensors(path, tensors, metadata=None):
    """tensors: {name: list of floats} as 1-D float32 tensors."""
    header = {}
    offset = 0
    blobs = []
    for name, values in tensors.items():
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": [len(values)],
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for b in blobs:
            f.write(b)


def adapted_matrices(config):
    """HF names and ranks of the MLP matrices, in the order the daemon enumerates them."""
    dim, hidden = config["hidden_size"], config["intermediate_size"]
    out = []
    for layer in range(config["num_hidden_layers"]):
        for kind in ("gate_proj", "up_proj", "down_proj"):
            out.append((f"model.layers.{layer}.mlp.{kind}.weight", min(dim, hidden)))
    return out


def make_experts(directory, k=3, seed=7):
    with open(os.path.join(MODEL_DIR, "config.json")) as f:
        config = json.load(f)
    rng = random.Random(seed)
    paths = []
    for e in range(k):
        tensors = {name: [rng.uniform(0.3, 1.7) for _ in range(rank)]
                   for name, rank in adapted_matrices(config)}
        path = os.path.join(directory, f"expert{e}.safetensors")
        write_safetensors(path, tensors)
        paths.append(path)
    return paths


def make_examples(n=4, seed=1, prompt_len=12, target_len=3, vocab=512):
    rng = random.Random(seed)
    return [{"prompt": [1] + [rng.randrange(3, vocab) for _ in range(prompt_len - 1)],
             "target": [rng.randrange(3, vocab) for _ in range(target_len)]}
            for _ in range(n)]


def wait_for(pred, timeout=30, interval=0.01):
    """Polls pred until it returns something true, which is returned; fails after timeout."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(interval)
    raise AssertionError("condition not met in time")


def free_port():
    """A TCP port on loopback that nothing listens on (for --listen tcp:127.0.0.1:PORT)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


class Daemon:
    """A zmixd process with its own cache directory and socket."""

    def __init__(self, workdir, experts, extra=(), model=MODEL_DIR):
        self.workdir = workdir
        self.cache_dir = os.path.join(workdir, "cache")
        self.socket = os.path.join(workdir, "zmixd.sock")
        self.address = "unix:" + self.socket
        self.log = os.path.join(workdir, "zmixd.log")
        self.args = [ZMIXD, "--model", model, "--experts", ",".join(experts),
                     "--cache-dir", self.cache_dir, "--listen", self.address,
                     "--workers", "2", "--log-level", "debug", *extra]
        self.proc = None

    def start(self, timeout=30.0):
        os.makedirs(self.workdir, exist_ok=True)
        if os.path.exists(self.socket):
            os.unlink(self.socket)
        self.logf = open(self.log, "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.logf, stderr=self.logf)
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"zmixd exited with {self.proc.returncode}: {self.log_text()}")
            if os.path.exists(self.socket):
                try:
                    with Client(self.address, timeout=5) as c:
                        c.ping()
                    return self
                except OSError:
                    pass
            time.sleep(0.05)
        raise RuntimeError("zmixd did not start: " + self.log_text())

    def client(self, timeout=30.0):
        return Client(self.address, timeout=timeout)

    def stop(self, sig=signal.SIGTERM, timeout=30.0):
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        try:
            rc = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.logf.close()
        return rc

    def kill9(self):
        """kill -9 the daemon (nothing flushed, nothing cleaned up); start() brings it back."""
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.proc = None
        self.logf.close()

    def log_text(self):
        try:
            with open(self.log, errors="replace") as f:
                return f.read()[-4000:]
        except OSError:
            return ""


@pytest.fixture(scope="session")
def experts(tmp_path_factory):
    if not os.path.isdir(MODEL_DIR):
        pytest.skip(f"{MODEL_DIR} absent")
    if not ZMIXD or not os.access(ZMIXD, os.X_OK):
        pytest.skip("ZMIXD (path of the zmixd binary) not set")
    return make_experts(str(tmp_path_factory.mktemp("experts")))


@pytest.fixture
def daemon(tmp_path, experts):
    d = Daemon(str(tmp_path), experts).start()
    yield d
    rc = d.stop()
    assert rc == 0, "zmixd did not exit cleanly: " + d.log_text()


@pytest.fixture(scope="module")
def shared_daemon(tmp_path_factory, experts):
    d = Daemon(str(tmp_path_factory.mktemp("shared")), experts).start()
    yield d
    rc = d.stop()
    assert rc == 0, "zmixd did not exit cleanly: " + d.log_text()
