"""A bounded load run (bench/load_zmixd.py) against a real zmixd: hundreds of connections
mixing every job method, plus clients that stall mid-frame or never read. Every response is
checked; no errors, every job ends, the stalled clients are cut off by the idle timeout,
and a ping on a fresh connection stays fast throughout. Size via ZMIX_LOAD_CONNECTIONS and
ZMIX_LOAD_REQUESTS (CI defaults: 200 connections, 4000 requests, 60 s bound)."""

import os
import sys
import threading
import time

from zmix_e2e_fixtures import SOURCE_DIR, Daemon

sys.path.insert(0, os.path.join(SOURCE_DIR, "bench"))
import load_zmixd  # noqa: E402

CONNECTIONS = int(os.environ.get("ZMIX_LOAD_CONNECTIONS", "200"))
REQUESTS = int(os.environ.get("ZMIX_LOAD_REQUESTS", "4000"))


def test_load_with_stalled_clients(tmp_path, experts):
    idle_ms = 1500
    d = Daemon(str(tmp_path), experts,
               extra=["--idle-timeout-ms", str(idle_ms), "--write-queue-limit", "1M",
                      "--max-connections", str(CONNECTIONS + 64), "--log-level", "info"])
    d.start()
    probe_ms = []
    stop = threading.Event()

    def probe():
        # Somebody else entirely: a fresh connection's ping, every 100 ms, during the run.
        while not stop.is_set():
            t = time.perf_counter()
            with d.client(timeout=10) as c:
                c.ping()
            probe_ms.append((time.perf_counter() - t) * 1e3)
            time.sleep(0.1)

    p = threading.Thread(target=probe, daemon=True)
    try:
        p.start()
        s = load_zmixd.run(d.address, CONNECTIONS, REQUESTS, duration=60, stallers=4, hogs=2,
                           progress=False, idle_timeout_s=idle_ms / 1000.0)
        stop.set()
        p.join(10)
        print(s)
        assert s["errors"] == 0, s["first_errors"]
        assert s["requests"] == REQUESTS
        assert s["jobs_submitted"] > 0 and s["jobs_done"] > 0
        assert s["jobs_done"] + s["jobs_cancelled"] == s["jobs_submitted"]
        assert s["stallers"]["closed_by_daemon"] == 4
        probe_ms.sort()
        # Generous bound (a shared 2-core machine, Python threads): nobody is held up for
        # the idle timeout by a staller or a hog.
        assert probe_ms and probe_ms[len(probe_ms) // 2] < 200, probe_ms
    finally:
        stop.set()
        assert d.stop() == 0


def test_connect_burst_is_queued_not_refused(tmp_path, experts):
    """400 clients connect while the daemon's loop is not accepting (stopped with SIGSTOP):
    the kernel must queue them all (listen backlog), then each is served. With a backlog of
    128 the excess connects failed with EAGAIN (found by the 500-connection load run)."""
    import signal
    import socket

    import msgpack

    d = Daemon(str(tmp_path), experts).start()
    socks = []
    try:
        d.proc.send_signal(signal.SIGSTOP)
        refused = 0
        try:
            for _ in range(400):
                s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                s.setblocking(False)
                try:
                    s.connect(d.socket)
                    socks.append(s)
                except BlockingIOError:
                    refused += 1
                    s.close()
        finally:
            d.proc.send_signal(signal.SIGCONT)
        assert refused == 0, f"{refused} of 400 connects refused"
        for s in socks:
            s.setblocking(True)
            s.settimeout(10)
            s.sendall(msgpack.packb([0, 1, "ping", {}]))
        for s in socks:
            unp = msgpack.Unpacker(raw=False)
            while True:
                unp.feed(s.recv(4096))
                msgs = list(unp)
                if msgs:
                    assert msgs[0][0] == 1 and msgs[0][3]["pong"] is True, msgs
                    break
    finally:
        for s in socks:
            s.close()
        assert d.stop() == 0
