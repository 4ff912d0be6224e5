"""The protocol's promises that a client written from proto/PROTOCOL.md alone relies on
(issue 12, "Strict protocol"): every string the daemon sends is valid UTF-8, `jobs` is newest
first, a cache hit is answered when the queue is full, out-of-range integers are ERANGE, a
file corrupted at rest is EIO, an acknowledged cancel survives kill -9, and priority does what
§5 says."""

import glob
import os
import socket
import struct
import time

import msgpack
import pytest

from conftest import Daemon, make_examples, wait_for
from zmix_client import Client, RpcError

SMALL = {"pop": 8, "iters": 2, "elite": 0.25, "std_tol": 0}
LONG = {"pop": 32, "iters": 1000, "std_tol": 0, "target_accuracy": 2, "patience": 0}
SLOW_EXAMPLES = dict(n=16, prompt_len=48, target_len=4)


# ---- every string the daemon sends is valid UTF-8 -------------------------------------------


def raw_str(b):
    """A msgpack str header and body for arbitrary bytes (a strict encoder would not make one)."""
    if len(b) < 32:
        return bytes([0xa0 | len(b)]) + b
    return bytes([0xd9, len(b)]) + b


def raw_request(msgid, method_bytes, params):
    """[0, msgid, method, params] where params is a list of (key bytes, value bytes) pairs."""
    out = bytes([0x94, 0x00]) + msgpack.packb(msgid) + raw_str(method_bytes)
    out += bytes([0x80 | len(params)])
    for k, v in params:
        out += raw_str(k) + v
    return out


def strict_exchange(address, frames):
    """Sends the frames and returns one decoded reply per frame. Decoding is strict: a
    string that is not UTF-8 raises UnicodeDecodeError and fails the test."""
    s = socket.socket(socket.AF_UNIX)
    s.connect(address[5:])
    s.settimeout(20)
    s.sendall(b"".join(frames))
    unp = msgpack.Unpacker(raw=False, unicode_errors="strict")
    replies = []
    while len(replies) < len(frames):
        chunk = s.recv(65536)
        assert chunk, "connection closed after %d replies" % len(replies)
        unp.feed(chunk)
        replies.extend(unp)
    s.close()
    return {r[1]: r for r in replies}


def test_error_replies_are_valid_utf8_whatever_the_client_sent(daemon):
    ex = msgpack.packb([{"prompt": [1, 5, 6], "target": [7]}])
    frames = [
        # an unknown key cut at 64 bytes, inside the two bytes of 'é'
        raw_request(1, b"ping", [(b"a" * 63 + "é".encode(), msgpack.packb(1))]),
        raw_request(2, b"\xff\xfe", []),  # method name that is not UTF-8
        raw_request(3, b"submit", [(b"task", raw_str(b"\xff")), (b"examples", ex)]),
        raw_request(4, b"get", [(b"task", raw_str(b"ok\xc3"))]),
        raw_request(5, b"submit", [(b"task", raw_str(b"t")), (b"examples", ex),
                                   (b"cem", b"\x81" + raw_str(b"metric") + raw_str(b"\xff\xfe"))]),
        raw_request(6, b"jobs", [(b"state", raw_str(b"d\xe9one"))]),
        raw_request(7, b"status", [(b"\xc0\xaf", msgpack.packb(1))]),  # overlong '/'
    ]
    replies = strict_exchange(daemon.address, frames)
    errors = {i: replies[i][2] for i in replies}
    assert all(e is not None for e in errors.values()), errors
    assert errors[1]["code"] == "EINVAL"
    assert "'" + "a" * 63 + "'" in errors[1]["message"], errors[1]  # cut before the 'é'
    assert errors[2]["code"] == "ENOTFOUND" and "\\xff\\xfe" in errors[2]["message"], errors[2]
    assert errors[3]["code"] == "EINVAL" and "0xff" in errors[3]["message"], errors[3]
    assert errors[4]["code"] == "EINVAL", errors[4]
    assert errors[5]["code"] == "EINVAL" and "\\xff\\xfe" in errors[5]["message"], errors[5]
    assert errors[6]["code"] == "EINVAL", errors[6]
    assert errors[7]["code"] == "EINVAL" and "\\xc0\\xaf" in errors[7]["message"], errors[7]
    with daemon.client() as c:  # and the daemon is fine
        assert c.ping()["pong"] is True


# ---- ordering, cache hits, ranges, corrupt files ---------------------------------------------


def test_jobs_are_newest_first_after_pipelined_submits(tmp_path, experts):
    d = Daemon(str(tmp_path), experts, extra=["--max-jobs", "64"]).start()
    try:
        n = 30
        frames = [msgpack.packb([0, i + 1, "submit",
                                 {"task": f"pipe{i}", "examples": make_examples(n=2, seed=i),
                                  "cem": SMALL}]) for i in range(n)]
        replies = strict_exchange(d.address, frames)
        assert all(r[2] is None for r in replies.values()), replies
        ids = sorted(r[3]["job"] for r in replies.values())
        with d.client() as c:
            listed = [j["job"] for j in c.jobs()]
            assert listed == sorted(listed, reverse=True), listed
            assert sorted(listed) == ids
            for i in ids:
                c.wait(i, timeout=120)
            listed = [j["job"] for j in c.jobs(state="done")]
            assert listed == sorted(ids, reverse=True), listed
    finally:
        assert d.stop() == 0, d.log_text()


def test_cache_hit_is_answered_when_the_queue_is_full(tmp_path, experts):
    d = Daemon(str(tmp_path), experts, extra=["--max-jobs", "1"]).start()
    try:
        with d.client() as c:
            cached_ex = make_examples(n=2, seed=3)
            first = c.submit("hit", cached_ex, cem=SMALL)
            assert c.wait(first["job"], timeout=60)["status"]["state"] == "done"
            busy = c.submit("busy", make_examples(**SLOW_EXAMPLES, seed=4), cem=LONG)
            assert busy["cached"] is False
            # the queue is full: new work is refused ...
            with pytest.raises(RpcError) as e:
                c.submit("other", make_examples(n=2, seed=5), cem=SMALL)
            assert e.value.code == "ELIMIT" and "queue full" in e.value.message
            with pytest.raises(RpcError) as e:
                c.submit("hit", cached_ex, cem=SMALL, recompute=True)
            assert e.value.code == "ELIMIT"
            # ... a cache hit is not (§4.5)
            again = c.submit("hit", cached_ex, cem=SMALL)
            assert again["cached"] is True and again["result"]["alpha"]
            c.cancel(busy["job"])
    finally:
        assert d.stop() == 0, d.log_text()


def test_every_out_of_range_integer_is_erange(daemon):
    ex = make_examples(n=1)
    with daemon.client() as c:
        for cem in ({"seed": -1}, {"pop": 1}, {"iters": 0}, {"pop": -5}):
            with pytest.raises(RpcError) as e:
                c.submit("r", ex, cem=cem)
            assert e.value.code == "ERANGE", (cem, e.value)
            assert list(cem)[0] in e.value.message
        with pytest.raises(RpcError) as e:
            c.submit("r", ex, priority=-11)
        assert e.value.code == "ERANGE"
        with pytest.raises(RpcError) as e:
            c.call("status", {"job": -1})
        assert e.value.code == "ERANGE"


def test_a_result_corrupted_at_rest_is_eio_not_eformat(tmp_path, experts):
    # --cache-bytes 1: no result stays in memory, so get reads the file each time
    d = Daemon(str(tmp_path), experts, extra=["--cache-bytes", "1"]).start()
    try:
        with d.client() as c:
            job = c.submit("rot", make_examples(n=2, seed=8), cem=SMALL)["job"]
            assert c.wait(job, timeout=60)["status"]["state"] == "done"
            # another result takes the one resident place: rot is on disk only
            other = c.submit("other", make_examples(n=2, seed=18), cem=SMALL)["job"]
            assert c.wait(other, timeout=60)["status"]["state"] == "done"
            assert [t["resident"] for t in c.tasks() if t["task"] == "rot"] == [False]
            files = [p for p in glob.glob(os.path.join(d.cache_dir, "tasks", "rot*"))
                     if not p.endswith(".tmp")]
            assert files, os.listdir(os.path.join(d.cache_dir, "tasks"))
            for p in files:  # flip bytes in the middle of every file of the task
                with open(p, "r+b") as f:
                    size = f.seek(0, os.SEEK_END)
                    f.seek(size // 2)
                    chunk = f.read(16)
                    f.seek(size // 2)
                    f.write(bytes(b ^ 0x5a for b in chunk))
            with pytest.raises(RpcError) as e:
                c.get("rot")
            assert e.value.code == "EIO", e.value
            assert "rot" in e.value.message
            assert c.ping()["pong"] is True
    finally:
        assert d.stop() == 0, d.log_text()


# ---- durable cancel ------------------------------------------------------------------------


def test_acknowledged_cancel_survives_kill_9(tmp_path, experts):
    d = Daemon(str(tmp_path), experts).start()
    with d.client() as c:
        job = c.submit("stopme", make_examples(**SLOW_EXAMPLES, seed=9), cem=LONG)["job"]
        wait_for(lambda: c.status(job)["generation"] >= 1)
        r = c.cancel(job)
        # the reply comes once the cancelled state is on disk
        assert r == {"job": job, "state": "cancelled"}, r
    d.kill9()
    d.start()
    try:
        with d.client() as c:
            st = c.status(job)
            assert st["state"] == "cancelled", st
            time.sleep(0.5)
            assert c.status(job)["state"] == "cancelled"
            assert all(j["state"] != "running" for j in c.jobs())
    finally:
        assert d.stop() == 0, d.log_text()


def test_cancel_of_a_queued_job_is_acknowledged_cancelled(tmp_path, experts):
    d = Daemon(str(tmp_path), experts, extra=["--max-running", "1"]).start()
    try:
        with d.client() as c:
            running = c.submit("first", make_examples(**SLOW_EXAMPLES, seed=10), cem=LONG)["job"]
            queued = c.submit("second", make_examples(n=2, seed=11), cem=SMALL)["job"]
            assert c.status(queued)["state"] == "queued"
            assert c.cancel(queued) == {"job": queued, "state": "cancelled"}
            assert c.cancel(running)["state"] == "cancelled"
            with pytest.raises(RpcError) as e:
                c.cancel(running)
            assert e.value.code == "ESTATE"
    finally:
        assert d.stop() == 0, d.log_text()


# ---- priority ------------------------------------------------------------------------------


def test_queued_jobs_start_in_priority_order(tmp_path, experts):
    """§5: at most --max-running jobs run; a free slot goes to the queued job of highest
    priority, then the earliest submitted."""
    d = Daemon(str(tmp_path), experts, extra=["--max-running", "1"]).start()
    try:
        with d.client() as c:
            blocker = c.submit("blocker", make_examples(**SLOW_EXAMPLES, seed=12),
                               cem={**LONG, "iters": 3})["job"]
            low = [c.submit(f"low{i}", make_examples(n=2, seed=20 + i), cem=SMALL, priority=0)["job"]
                   for i in range(2)]
            high = c.submit("high", make_examples(n=2, seed=30), cem=SMALL, priority=10)["job"]
            mid = c.submit("mid", make_examples(n=2, seed=31), cem=SMALL, priority=5)["job"]
            for j in [blocker, *low, high, mid]:
                assert c.wait(j, timeout=120)["status"]["state"] == "done"
            started = {j: c.status(j)["started"] for j in [blocker, *low, high, mid]}
            order = sorted(started, key=lambda j: started[j])
            assert order == [blocker, high, mid, low[0], low[1]], (order, started)
    finally:
        assert d.stop() == 0, d.log_text()
