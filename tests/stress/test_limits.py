"""Every resource limit of zmixd, hit through a client: each answered with its own clear error
(code and a message naming the limit and the value), and the daemon serving on afterwards."""

import socket
import time

import msgpack
import pytest

from zmix_e2e_fixtures import Daemon, make_examples
from zmix_client import Client, RpcError

LIMITS = ["--max-jobs", "2", "--max-running", "1", "--frame-limit", "4096",
          "--max-examples", "4", "--max-tokens", "120", "--max-pop", "64",
          "--max-generations", "20", "--max-dim", "10", "--max-connections", "6"]


@pytest.fixture(scope="module")
def limited(tmp_path_factory, experts):
    d = Daemon(str(tmp_path_factory.mktemp("limits")), experts, extra=LIMITS).start()
    yield d
    assert d.stop() == 0


def refused(c, code, words, task="t", examples=None, cem=None):
    with pytest.raises(RpcError) as e:
        c.submit(task, examples or make_examples(n=2, seed=1), cem=cem)
    assert e.value.code == code, e.value
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    return str(e.value)


@pytest.mark.parametrize("what,code,words,kwargs", [
    ("examples", "ELIMIT", ["examples", "4"], {"examples": make_examples(n=5)}),
    ("tokens", "ELIMIT", ["tokens", "120"],
     {"examples": make_examples(n=4, prompt_len=30, target_len=3)}),
    # prompt + target - 1 = 513 positions read: one over the context (512 fed is the limit)
    ("context", "ELIMIT", ["reads 513", "context of 512"],
     {"examples": make_examples(n=1, prompt_len=511, target_len=3)}),
    ("vocabulary", "ERANGE", ["512", "vocab"],
     {"examples": [{"prompt": [1, 2], "target": [512]}]}),
    ("population", "ERANGE", ["pop", "64"], {"cem": {"pop": 65}}),
    ("generations", "ERANGE", ["iters", "20"], {"cem": {"iters": 21}}),
    ("search dimension", "ELIMIT", ["10"], {"cem": {"per_layer": True}}),
])
def test_per_job_limits(limited, what, code, words, kwargs):
    with limited.client() as c:
        msg = refused(c, code, words, **kwargs)
        print(f"{what}: {code}: {msg}")
        assert c.jobs() == [] or all(j["task"] != "t" for j in c.jobs())  # nothing queued
        assert c.ping()["pong"] is True


def test_queue_limit(limited):
    slow = dict(n=4, prompt_len=24, target_len=3)
    with limited.client() as c:
        a = c.submit("q1", make_examples(seed=11, **slow), cem={"pop": 64, "iters": 20})["job"]
        b = c.submit("q2", make_examples(seed=12, **slow), cem={"pop": 64, "iters": 20})["job"]
        msg = refused(c, "ELIMIT", ["2"], task="q3", examples=make_examples(n=2, seed=13))
        print("queue:", msg)
        c.cancel(a)
        c.cancel(b)
        for j in (a, b):
            assert c.wait(j, timeout=30)["status"]["state"] == "cancelled"
        # Room again.
        j = c.submit("q3", make_examples(n=2, seed=13), cem={"pop": 4, "iters": 1})["job"]
        assert c.wait(j, timeout=30)["status"]["state"] == "done"


def test_frame_limit_closes_only_that_connection(limited):
    with limited.client() as other:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(limited.socket)
        # Declares a 1 MiB string: refused from the header alone, before the bytes arrive.
        s.sendall(b"\x94\x00\x01\xa4ping\x81\xa1x\xdb" + (1 << 20).to_bytes(4, "big"))
        s.settimeout(10)
        unp = msgpack.Unpacker(raw=False)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
        s.close()
        unp.feed(data)
        msgs = list(unp)
        assert msgs and msgs[0][0] == 2 and msgs[0][1] == "error", msgs
        assert msgs[0][2]["code"] == "ELIMIT" and "4096" in msgs[0][2]["message"], msgs
        assert other.ping()["pong"] is True


def test_connection_limit(limited):
    clients = []
    try:
        # The fixture's own probe connection is gone; 6 are allowed.
        for _ in range(6):
            clients.append(Client(limited.address, timeout=10))
            clients[-1].ping()
        extra = Client(limited.address, timeout=10)
        with pytest.raises((RpcError, ConnectionError, OSError)) as e:
            extra.ping()
        if isinstance(e.value, RpcError):
            assert e.value.code == "ELIMIT", e.value
        extra.close()
    finally:
        for c in clients:
            c.close()
    time.sleep(0.2)
    with limited.client() as c:
        assert c.ping()["pong"] is True


def test_job_memory_limit(tmp_path, experts):
    d = Daemon(str(tmp_path), experts, extra=["--job-memory", "1M"]).start()
    try:
        with d.client() as c:
            assert c.info().get("job_memory", 1 << 20) == 1 << 20
            # per-layer α (dimension 45) with a long history: several MiB of search state.
            msg = refused(c, "ELIMIT", ["per-job limit of 1 MiB", "needs about"],
                          cem={"per_layer": True, "pop": 1024, "iters": 1000})
            print("job memory:", msg)
            j = c.submit("fits", make_examples(n=2, seed=5), cem={"pop": 8, "iters": 2})["job"]
            assert c.wait(j, timeout=30)["status"]["state"] == "done"
    finally:
        assert d.stop() == 0
