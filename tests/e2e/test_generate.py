"""The daemon's generate method (PROTOCOL.md, "generate") end to end, through the Python
client and the zmix CLI:

- the base model's greedy continuation is stories260K's known one (llama2.c's);
- under a task's adaptation (the demo, whose search reaches accuracy 1.0), greedy generation
  reproduces every example's target, as text; the daemon's tokens are those of the offline
  `zmix generate --z` on the result `zmix get --out` wrote, sampled ones included, and
  `zmix generate --task` prints the same;
- an unknown task, bad params (types, ranges, context) are refused with the right code;
- a client that goes away mid-generation stops it, and a running adaptation job finishes with
  exactly the result it has without the generation.
"""
import json
import os
import signal
import socket
import subprocess
import time

import msgpack
import pytest

from conftest import Daemon, ZMIXD, make_examples
from zmix_client import RpcError

ZMIX = os.path.join(os.path.dirname(ZMIXD), "zmix") if ZMIXD else ""
KNOWN_1 = [461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264, 283,
           452, 288, 13]
DEMO_EXPERTS = ["red", "green", "blue", "gold"]


def wait_done(c, job, timeout=120):
    r = c.wait(job, timeout=timeout)
    assert not r["timed_out"], r
    return r["status"]


def wait_running(c, job, timeout=30):
    """Until the job is being scored (so that it holds the workers)."""
    deadline = time.time() + timeout
    while c.status(job)["state"] != "running":
        assert time.time() < deadline, c.status(job)
        time.sleep(0.01)


def zmix(*args):
    r = subprocess.run([ZMIX, *map(str, args)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    """A daemon on the demo model with its experts, and the demo task adapted (cached)."""
    if not ZMIXD or not os.access(ZMIX, os.X_OK):
        pytest.skip("ZMIXD (and zmix beside it) not set")
    root = tmp_path_factory.mktemp("gen_demo")
    zmix("demo-init", root / "demo")
    experts = [str(root / "demo" / "experts" / f"{e}.safetensors") for e in DEMO_EXPERTS]
    d = Daemon(str(root / "daemon"), experts, model=str(root / "demo" / "model")).start()
    task = json.loads((root / "demo" / "task.json").read_text())["examples"]
    with d.client() as c:
        job = c.submit("demo", task, cem={"normalize": True, "validation": 0, "seed": 0})["job"]
        status = wait_done(c, job)
    assert status["state"] == "done", status
    yield {"daemon": d, "task": task, "status": status, "root": root}
    assert d.stop() == 0, d.log_text()


def test_base_model_greedy_is_the_known_continuation(daemon):
    with daemon.client() as c:
        r = c.generate([1], max_tokens=20)
        assert r["tokens"] == KNOWN_1
        assert r["finish_reason"] == "length" and r["stop_token"] is None
        assert r["text"] is None and r["task"] is None and r["prompt_tokens"] == 1
        # A stop id: the tokens before its first occurrence, the id named.
        r = c.generate([1], max_tokens=20, stop=[401])
        assert r["tokens"] == KNOWN_1[:2]
        assert r["finish_reason"] == "stop" and r["stop_token"] == 401
        # Seeded sampling: reproducible, and another seed differs.
        a = c.generate([1], max_tokens=40, temperature=1.0, seed=7)
        assert c.generate([1], max_tokens=40, temperature=1.0, seed=7) == a
        assert c.generate([1], max_tokens=40, temperature=1.0, seed=8)["tokens"] != a["tokens"]


def test_adapted_greedy_reproduces_the_targets(demo):
    assert demo["status"]["best"]["accuracy"] == 1.0  # else the check proves nothing
    with demo["daemon"].client() as c:
        base_hits = 0
        for ex in demo["task"]:
            r = c.generate(ex["prompt"], task="demo", max_tokens=len(ex["target"]))
            assert r["text"] == ex["target"], (ex, r)
            assert r["task"] == "demo"
            base = c.generate(ex["prompt"], max_tokens=len(ex["target"]))
            base_hits += base["text"] == ex["target"]
        assert base_hits < len(demo["task"]) / 2


def test_daemon_and_offline_generation_agree(demo):
    d, root = demo["daemon"], demo["root"]
    result = root / "demo.result.safetensors"
    zmix("get", "demo", "--socket", d.socket, "--out", result)
    prompt = demo["task"][3]["prompt"]
    with d.client() as c:
        for sampling in ({}, {"temperature": 0.9, "seed": 11},
                         {"temperature": 1.2, "top_p": 0.8, "seed": 12}):
            r = c.generate(prompt, task="demo", max_tokens=30, **sampling)
            args = ["--model", root / "demo" / "model", "--z", result, "--text", prompt,
                    "-n", 30, "--json"]
            for key, value in sampling.items():
                args += ["--" + key.replace("_", "-"), value]
            offline = json.loads(zmix("generate", *args))
            assert offline["tokens"] == r["tokens"] and offline["text"] == r["text"]
            # zmix generate --task goes through the daemon: the same tokens.
            via_cli = json.loads(zmix("generate", "--task", "demo", "--socket", d.socket,
                                      "--text", prompt, "-n", 30, "--json",
                                      *args[args.index("--json") + 1:]))
            assert via_cli["tokens"] == r["tokens"]


@pytest.mark.parametrize("params,code,words", [
    ({"prompt": [1], "task": "no-such-task"}, "ENOTFOUND", "no-such-task"),
    ({"prompt": [1], "task": "bad name!"}, "EINVAL", "task"),
    ({"prompt": [1], "max_tokens": 0}, "ERANGE", "max_tokens"),
    ({"prompt": [1], "max_tokens": 1025}, "ERANGE", "max_tokens"),
    ({"prompt": [1], "max_tokens": "8"}, "EINVAL", "max_tokens"),
    ({"prompt": [1], "temperature": -0.5}, "ERANGE", "temperature"),
    ({"prompt": [1], "top_p": 0}, "ERANGE", "top_p"),
    ({"prompt": [1], "top_p": 1.5}, "ERANGE", "top_p"),
    ({"prompt": [1], "seed": -1}, "ERANGE", "seed"),  # as cem.seed of submit
    ({"prompt": [1], "stop": [512]}, "ERANGE", "stop[0]"),
    ({"prompt": [1], "stop": list(range(65))}, "ERANGE", "stop"),
    ({"prompt": [1], "stop": [1, "x"]}, "EINVAL", "stop[1]"),
    ({"prompt": []}, "EINVAL", "empty"),
    ({"prompt": [1, 512]}, "ERANGE", "prompt[1]"),
    ({"prompt": "Once upon a time"}, "EINVAL", "no tokenizer"),
    ({"prompt": {"a": 1}}, "EINVAL", "prompt"),
    ({"max_tokens": 4}, "EINVAL", "prompt"),
    ({"prompt": [1] * 500, "max_tokens": 100}, "ELIMIT", "context length 512"),
    ({"prompt": [1], "bogus": 1}, "EINVAL", "bogus"),
])
def test_bad_params(daemon, params, code, words):
    with daemon.client() as c:
        with pytest.raises(RpcError) as e:
            c.call("generate", params)
        assert e.value.code == code and words in e.value.message, e.value.message
        assert c.ping()["pong"] is True  # the connection stays usable


def test_client_gone_mid_generation_leaves_a_job_undisturbed(tmp_path, experts):
    ex = make_examples(n=12, prompt_len=40, target_len=4, seed=41)
    cem = {"pop": 24, "iters": 12, "std_tol": 0, "seed": 3}
    d = Daemon(str(tmp_path / "d"), experts).start()
    try:
        with d.client() as c:
            job = c.submit("steady", ex, cem=cem)["job"]
            wait_running(c, job)
            # A long generation whose client leaves at once, while the job runs.
            s = socket.socket(socket.AF_UNIX)
            s.connect(d.socket)
            s.sendall(msgpack.packb([0, 1, "generate", {"prompt": [1], "max_tokens": 500}]))
            time.sleep(0.05)
            s.close()
            disturbed = wait_done(c, job)
            assert disturbed["state"] == "done", disturbed
            deadline = time.time() + 10
            while "client went away" not in d.log_text() and time.time() < deadline:
                time.sleep(0.05)
            line = [l for l in d.log_text().splitlines() if "client went away" in l]
            assert line, d.log_text()
            assert int(line[0].split(" after ")[1].split()[0]) < 500
            # The same search again, nothing else running: bit-identical.
            again = c.submit("steady", ex, cem=cem, recompute=True)["job"]
            reference = wait_done(c, again)
            assert reference["best_alpha"] == disturbed["best_alpha"]
            assert reference["best"] == disturbed["best"]
            assert c.generate([1], max_tokens=5)["tokens"] == KNOWN_1[:5]  # still serving
    finally:
        assert d.stop() == 0, d.log_text()



def test_at_most_one_generation_per_worker(daemon):
    # Three requests in one write reach the daemon together: the fixture's 2 workers take two,
    # the third is refused at once; the two others then finish normally.
    s = socket.socket(socket.AF_UNIX)
    s.connect(daemon.socket)
    s.settimeout(30)
    req = {"prompt": [1], "max_tokens": 200}
    s.sendall(b"".join(msgpack.packb([0, i, "generate", req]) for i in (1, 2, 3)))
    unpacker, replies = msgpack.Unpacker(raw=False), {}
    while len(replies) < 3:
        unpacker.feed(s.recv(1 << 16))
        for msg in unpacker:
            replies[msg[1]] = msg
    s.close()
    assert replies[3][2]["code"] == "ELIMIT" and "at most 2" in replies[3][2]["message"]
    for i in (1, 2):
        assert replies[i][2] is None and len(replies[i][3]["tokens"]) == 200


def test_shutdown_ends_a_generation_with_ecanceled(tmp_path, experts):
    d = Daemon(str(tmp_path / "d"), experts).start()
    with d.client() as c:
        # A job keeps the workers busy, so the generation is still running at SIGTERM.
        job = c.submit("busy", make_examples(n=12, prompt_len=40, target_len=4, seed=5),
                       cem={"pop": 24, "iters": 30})["job"]
        wait_running(c, job)
    s = socket.socket(socket.AF_UNIX)
    s.connect(d.socket)
    s.settimeout(30)
    s.sendall(msgpack.packb([0, 1, "generate", {"prompt": [1], "max_tokens": 500}]))
    time.sleep(0.1)
    d.proc.send_signal(signal.SIGTERM)
    unpacker, replies = msgpack.Unpacker(raw=False), []
    while not replies:
        data = s.recv(1 << 16)
        if not data:
            break
        unpacker.feed(data)
        replies += [m for m in unpacker if m[0] == 1]
    s.close()
    assert d.stop() == 0, d.log_text()
    assert replies and replies[0][2]["code"] == "ECANCELED", replies
