#!/usr/bin/env python3
"""Issue 12's pre-auth lockout, measured: a zmixd with TCP and a token at --max-connections 8,
then N connections that never authenticate, each sending all but the last bytes of an
`auth` frame just under 4 MiB. Prints the daemon's RSS before and after, and whether an
authenticated TCP client and the Unix-socket owner are still served (docs/reliability.md,
"Attacks tried").

    /usr/bin/python3 bench/preauth_memory.py --zmixd build/zmixd [--connections 9]
"""

import argparse
import os
import socket
import sys
import tempfile
import time

SOURCE_DIR = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "clients", "python"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "e2e"))

import msgpack  # noqa: E402
from conftest import Daemon, free_port, make_experts  # noqa: E402
from zmix_client import Client  # noqa: E402

TOKEN = "s3cret-token-0123456789"


def rss_mb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def served(make_client):
    try:
        with make_client() as c:
            return c.ping()["pong"] is True
    except Exception as e:  # noqa: BLE001 - the outcome is what is reported
        return f"no ({e})"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zmixd", required=True)
    ap.add_argument("--connections", type=int, default=9)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="zmix-preauth-")
    token = os.path.join(tmp, "token")
    with open(token, "w") as f:
        f.write(TOKEN + "\n")
    os.chmod(token, 0o600)
    port = free_port()
    d = Daemon(os.path.join(tmp, "d"), make_experts(tmp),
               extra=["--listen", f"tcp:127.0.0.1:{port}", "--token-file", token,
                      "--max-connections", "8"])
    d.args[0] = args.zmixd
    d.start()
    before = rss_mb(d.proc.pid)
    frame = msgpack.packb([0, 1, "auth", {"token": "x" * ((4 << 20) - 200)}])
    socks = []
    for _ in range(args.connections):
        c = socket.create_connection(("127.0.0.1", port))
        try:
            c.sendall(frame[:-10])
        except OSError:
            pass  # refused and closed while sending: the outcome we want
        socks.append(c)
    time.sleep(1)
    after = rss_mb(d.proc.pid)
    tcp = served(lambda: Client(f"tcp:127.0.0.1:{port}", token=TOKEN, timeout=5))
    owner = served(lambda: d.client(timeout=5))
    print(f"RSS {before:.1f} MB -> {after:.1f} MB with {args.connections} unauthenticated "
          f"~4 MiB partial frames; authenticated TCP client served: {tcp}; "
          f"Unix-socket owner served: {owner}")
    for c in socks:
        c.close()
    d.stop()


if __name__ == "__main__":
    main()
