"""Helpers for the command-line tests: where the zmix binary and the build tree are, and a
runner that captures a command's exit code, stdout and stderr."""

import json
import os
import struct
import subprocess

import pytest

from conftest import ZMIXD

ZMIX = os.environ.get("ZMIX") or (os.path.join(os.path.dirname(ZMIXD), "zmix") if ZMIXD else "")
BUILD_DIR = os.environ.get("ZMIX_BUILD_DIR") or (os.path.dirname(ZMIXD) if ZMIXD else "")
SOURCE_DIR = os.environ.get("ZMIX_SOURCE_DIR",
                            os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SANITIZED = os.environ.get("ZMIX_SANITIZE", "0") in ("1", "ON", "TRUE", "true")

# The CLI tests run from ctest's client_e2e (which sets ZMIX); the daemon's own e2e run of this
# folder skips them rather than run them twice.
requires_cli = pytest.mark.skipif(not os.environ.get("ZMIX"),
                                  reason="run by ctest client_e2e (ZMIX not set)")


class Result:
    def __init__(self, proc):
        self.rc = proc.returncode
        self.out = proc.stdout
        self.err = proc.stderr

    def json(self):
        return json.loads(self.out)

    def __repr__(self):
        return f"rc={self.rc}\nstdout:\n{self.out}\nstderr:\n{self.err}"


def run(args, env=None, timeout=120, cwd=None):
    full_env = dict(os.environ)
    full_env.pop("ZMIX_ADDR", None)
    full_env.pop("ZMIX_TOKEN_FILE", None)
    if env:
        full_env.update(env)
    proc = subprocess.run(args, capture_output=True, text=True, env=full_env, timeout=timeout,
                          cwd=cwd)
    return Result(proc)


def zmix(daemon, *args, **kw):
    """`zmix ARGS --socket <daemon's socket>` (daemon None: no address option)."""
    extra = ["--socket", daemon.socket] if daemon is not None else []
    return run([ZMIX, *args, *extra], **kw)


def read_safetensors(path):
    """{name: list of floats}, metadata."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for name, t in header.items():
        assert t["dtype"] == "F32"
        a, b = t["data_offsets"]
        assert b - a == 4 * t["shape"][0]
        out[name] = list(struct.unpack("<%df" % t["shape"][0], data[a:b]))
    return out, meta


def write_examples(path, examples):
    with open(path, "w") as f:
        json.dump({"examples": examples}, f)
    return str(path)
