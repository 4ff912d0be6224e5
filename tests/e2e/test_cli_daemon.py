"""The zmix daemon commands end to end: a real zmixd (stories260K), the real zmix binary,
every command with and without --json, the error messages users see, and the plot."""

import json
import os
import pty
import re
import select
import struct
import subprocess
import time
import xml.etree.ElementTree as ET

import pytest

from cli_fixtures import (SOURCE_DIR, ZMIX, read_safetensors, requires_cli, run, write_examples,
                          zmix)
from conftest import MODEL_DIR, make_examples

pytestmark = requires_cli

# Bounds away from 0: with every α at 0 the composed z' is 0 and the candidate's score NaN.
# The CEM method: these tests count its generations (pop 12, 4 generations).
SMALL = ["--method", "cem", "--pop", "12", "--iters", "4", "--elite", "0.25", "--std-tol", "0",
         "--bounds", "0.05,1"]
SLOW = ["--pop", "32", "--iters", "400", "--std-tol", "0", "--bounds", "0.05,1"]
SLOW_EXAMPLES = dict(n=16, prompt_len=48, target_len=4)


def job_id(res):
    m = re.search(r"job (\d+)", res.out + res.err)
    assert m, res
    return int(m.group(1))


def test_info_and_stats(shared_daemon):
    r = zmix(shared_daemon, "info")
    assert r.rc == 0, r
    assert "experts (3): expert0 expert1 expert2" in r.out
    assert "15 matrices" in r.out and "vocab 512" in r.out
    info = zmix(shared_daemon, "info", "--json").json()
    assert info["model"]["vocab_size"] == 512
    assert info["alpha_dim"] == {"per_expert": 3, "per_layer": 45}
    r = zmix(shared_daemon, "stats")
    assert r.rc == 0 and "workers 0/2 busy" in r.out or "workers" in r.out, r
    st = zmix(shared_daemon, "stats", "--json").json()
    assert st["workers"]["total"] == 2


def test_submit_wait_status_get_tasks_evict(shared_daemon, tmp_path):
    ex = write_examples(tmp_path / "ex.json", make_examples(n=3, seed=31))
    r = zmix(shared_daemon, "submit", "cli-flow", "--examples", ex, *SMALL, "--wait")
    assert r.rc == 0, r
    assert re.search(r"job \d+ done: \w+ after 4 generations, best accuracy", r.out), r
    # not a terminal: one plain progress line per generation on stderr
    gens = re.findall(r"generation (\d+)/4: best acc [0-9.]+ loglik -?[0-9.]+, \d+ eval/s", r.err)
    assert gens == ["1", "2", "3", "4"], r
    job = job_id(r)

    st = zmix(shared_daemon, "status", str(job), "--json").json()
    assert st["state"] == "done" and st["generation"] == 4 and st["task"] == "cli-flow"
    r = zmix(shared_daemon, "status", str(job))
    assert r.rc == 0 and f"job {job}  task cli-flow  state done" in r.out, r
    assert "generation 4/4" in r.out and "best alpha" in r.out

    r = zmix(shared_daemon, "wait", str(job), "--json")  # an ended job answers at once
    assert r.rc == 0 and json.loads(r.out)["status"]["state"] == "done", r

    out = tmp_path / "z.safetensors"
    r = zmix(shared_daemon, "get", "cli-flow", "--out", str(out))
    assert r.rc == 0 and f"wrote {out}" in r.out and "z': 15 matrices, 960 floats" in r.out, r
    tensors, meta = read_safetensors(out)
    info = zmix(shared_daemon, "info", "--json").json()
    # every matrix, in name order (the file is written by the safetensors writer, which sorts)
    assert list(tensors) == sorted(m["name"] for m in info["matrices"])
    assert meta["task"] == "cli-flow" and len(json.loads(meta["alpha"])) == 3
    full = zmix(shared_daemon, "get", "cli-flow", "--json", "--vectors").json()
    for name, values in tensors.items():
        # %.9g in the JSON round-trips to the same float32 bits
        assert [struct.unpack("<f", struct.pack("<f", v))[0] for v in full["z"][name]] == values
    assert full["job"] == job and "z" not in zmix(shared_daemon, "get", "cli-flow", "--json").json()

    # The z' file says which model it is for; zmix export takes the task from the daemon (the
    # model path too) or that file, to the same adapter.
    assert meta["model_fingerprint"] == info["model"]["fingerprint"] and meta["rescale"] == "true"
    r = zmix(shared_daemon, "export", "cli-flow", "--format", "peft", "--rank", "4", "--out",
             str(tmp_path / "lora"), "--json")
    assert r.rc == 0, r
    assert r.json()["total_rank"] == 4 * 15
    assert r.json()["model_fingerprint"] == info["model"]["fingerprint"]
    r = run([ZMIX, "export", "--model", info["model"]["path"], "--result", str(out), "--format",
             "peft", "--rank", "4", "--out", str(tmp_path / "lora2"), "--quiet"])
    assert r.rc == 0, r
    assert ((tmp_path / "lora" / "adapter_model.safetensors").read_bytes() ==
            (tmp_path / "lora2" / "adapter_model.safetensors").read_bytes())
    # The daemon's own copy in its cache directory describes itself as well: export reads it
    # (and the same z' gives the same adapter).
    cached = zmix(shared_daemon, "get", "cli-flow", "--json").json()["safetensors"]
    _, cached_meta = read_safetensors(cached)
    assert cached_meta["zmix_format"] == "zmix.z"
    assert cached_meta["model_fingerprint"] == info["model"]["fingerprint"]
    assert cached_meta["z_sha256"] == meta["z_sha256"]
    r = run([ZMIX, "export", "--model", info["model"]["path"], "--result", cached, "--format",
             "peft", "--rank", "4", "--out", str(tmp_path / "lora3"), "--quiet"])
    assert r.rc == 0, r
    assert ((tmp_path / "lora" / "adapter_model.safetensors").read_bytes() ==
            (tmp_path / "lora3" / "adapter_model.safetensors").read_bytes())

    tasks = zmix(shared_daemon, "tasks", "--json").json()["tasks"]
    assert "cli-flow" in [t["task"] for t in tasks]
    assert re.search(r"^cli-flow\s+%d\s" % job, zmix(shared_daemon, "tasks").out, re.M)
    jobs = zmix(shared_daemon, "jobs", "--json").json()["jobs"]
    assert {"job": job, "state": "done"}.items() <= [j for j in jobs if j["job"] == job][0].items()
    assert re.search(r"^%d\s+cli-flow\s+done\s+4\s" % job,
                     zmix(shared_daemon, "jobs", "--state", "done").out, re.M)

    # the same request again is answered from the cache
    r = zmix(shared_daemon, "submit", "cli-flow", "--examples", ex, *SMALL)
    assert r.rc == 0 and f"task cli-flow: cached result from job {job}" in r.out, r
    r = zmix(shared_daemon, "submit", "cli-flow", "--examples", ex, *SMALL, "--json")
    assert r.json()["cached"] is True

    r = zmix(shared_daemon, "evict", "cli-flow")
    assert r.rc == 0 and r.out.strip() == "evicted task cli-flow", r
    assert "cli-flow" not in [t["task"] for t in zmix(shared_daemon, "tasks", "--json").json()["tasks"]]
    r = zmix(shared_daemon, "get", "cli-flow")
    assert r.rc == 1 and r.err.strip() == (
        "zmix get: task 'cli-flow' is not cached (zmix tasks lists the cached tasks)"), r
    r = zmix(shared_daemon, "evict", "cli-flow")
    assert r.rc == 1 and "is not cached" in r.err, r


def test_submit_cancel_and_wait_timeout(shared_daemon, tmp_path):
    ex = write_examples(tmp_path / "ex.json", make_examples(**SLOW_EXAMPLES, seed=32))
    r = zmix(shared_daemon, "submit", "cli-cancel", "--examples", ex, *SLOW, "--json",
             "--priority", "3")
    assert r.rc == 0, r
    sub = r.json()
    assert sub["cached"] is False and sub["state"] in ("queued", "running")
    job = sub["job"]
    t0 = time.time()
    r = zmix(shared_daemon, "wait", str(job), "--timeout", "0.3")
    assert r.rc == 3 and f"job {job} still running after 0.3 s" in r.err, r
    assert time.time() - t0 < 10
    r = zmix(shared_daemon, "wait", str(job), "--timeout", "0.2", "--json")
    assert r.rc == 3 and r.json()["timed_out"] is True and r.json()["status"]["job"] == job, r
    r = zmix(shared_daemon, "cancel", str(job))
    assert r.rc == 0 and re.fullmatch(rf"job {job} cancelled\n", r.out), r
    r = zmix(shared_daemon, "wait", str(job))
    assert r.rc == 1 and f"zmix wait: job {job} cancelled" in r.err, r
    st = zmix(shared_daemon, "status", str(job), "--json").json()
    assert st["state"] == "cancelled" and st["priority"] == 3 and st["generation"] < 400
    r = zmix(shared_daemon, "cancel", str(job))
    assert r.rc == 1 and r.err == f"zmix cancel: job {job} is already cancelled\n", r


def test_progress_bar_on_a_terminal(shared_daemon, tmp_path):
    ex = write_examples(tmp_path / "ex.json", make_examples(n=3, seed=33))
    try:
        master, slave = pty.openpty()
    except OSError as e:  # a container or chroot without /dev/pts
        pytest.skip(f"no pseudo-terminal available: {e}")
    proc = subprocess.Popen([ZMIX, "submit", "cli-tty", "--examples", ex, *SMALL, "--wait",
                             "--socket", shared_daemon.socket],
                            stdin=slave, stdout=slave, stderr=slave)
    os.close(slave)
    chunks = []
    deadline = time.time() + 60
    while time.time() < deadline:
        ready, _, _ = select.select([master], [], [], 0.5)
        if ready:
            try:
                data = os.read(master, 65536)
            except OSError:
                break
            if not data:
                break
            chunks.append(data)
        elif proc.poll() is not None:
            break
    assert proc.wait(30) == 0
    os.close(master)
    text = b"".join(chunks).decode()
    # redrawn in place: carriage return, the bar, erase to end of line
    bars = re.findall(r"\r(\[([#.]+)\]  (\d)/4  best acc [0-9.]+ loglik +-?[0-9.]+ +\d+ eval/s)"
                      r"\x1b\[K", text)
    assert bars, repr(text)
    assert bars[-1][2] == "4" and set(bars[-1][1]) == {"#"}
    assert len({len(b[0]) for b in bars}) == 1, bars  # the bar keeps its width
    assert "done: " in text


def test_error_messages(shared_daemon, tmp_path):
    for cmd in ("status", "wait", "cancel"):
        r = zmix(shared_daemon, cmd, "987654")
        assert r.rc == 1 and r.err == (
            f"zmix {cmd}: job 987654 not found (zmix jobs lists the daemon's jobs)\n"), r
    bad = tmp_path / "bad.json"
    good = make_examples(n=4, seed=34)
    good[3]["target"] = []
    write_examples(bad, good)
    r = zmix(shared_daemon, "submit", "cli-bad", "--examples", str(bad))
    assert r.rc == 1 and r.err == f"zmix submit: {bad}: examples[3].target is empty\n", r
    # a token id beyond the vocabulary is caught by the daemon, reported with the file
    good = make_examples(n=2, seed=35)
    good[1]["prompt"][2] = 9999
    write_examples(bad, good)
    r = zmix(shared_daemon, "submit", "cli-bad", "--examples", str(bad))
    assert r.rc == 1 and "examples[1].prompt[2]: token id 9999 outside the vocabulary" in r.err, r
    r = zmix(shared_daemon, "submit", "cli-bad", "--examples", str(tmp_path / "missing.json"))
    assert r.rc == 1 and "missing.json" in r.err, r
    r = zmix(shared_daemon, "submit", "bad name!", "--examples", str(tmp_path / "ex.json"))
    assert r.rc == 1, r
    # a stopped (or never started) daemon
    sock = tmp_path / "nobody.sock"
    for how in (["--socket", str(sock)], ["--connect", f"unix:{sock}"]):
        r = run([ZMIX, "info", *how])
        assert r.rc == 1, r
        assert r.err.startswith(f"zmix: daemon not running at unix:{sock} ("), r
        assert "start it with 'zmixd --model" in r.err and r.err.count("\n") == 1
    r = run([ZMIX, "jobs"], env={"ZMIX_ADDR": f"unix:{sock}"})
    assert r.rc == 1 and f"daemon not running at unix:{sock}" in r.err, r
    r = run([ZMIX, "jobs"], env={"ZMIX_ADDR": shared_daemon.address})  # the variable is used
    assert r.rc == 0 and r.out.startswith("JOB"), r
    r = run([ZMIX, "info"], env={"XDG_CACHE_HOME": str(tmp_path)})  # the default socket
    assert r.rc == 1 and f"unix:{tmp_path}/zmix/zmixd.sock" in r.err, r
    r = run([ZMIX, "info", "--connect", "tcp:127.0.0.1"])
    assert r.rc == 1 and "expected tcp:HOST:PORT" in r.err, r
    # usage errors: exit code 2
    assert zmix(shared_daemon, "status", "abc").rc == 2
    assert zmix(shared_daemon, "submit", "t").rc == 2  # --examples missing
    assert zmix(shared_daemon, "submit", "t", "--examples", "x", "--pop", "1").rc == 2
    assert zmix(shared_daemon, "jobs", "--frobnicate").rc == 2
    assert run([ZMIX, "submit", "--help"]).rc == 0


def check_svg(path, n_gen, experts, averaged=None):
    root = ET.parse(path).getroot()  # a real XML parser: the file must be well-formed
    ns = "{http://www.w3.org/2000/svg}"
    assert root.tag == ns + "svg"
    lines = {p.get("data-series"): p.get("points").split()
             for p in root.iter(ns + "polyline") if p.get("class") == "series"}
    expected = [f"{panel}:{s}" for panel in ("accuracy", "loglik")
                for s in ("best", "elite_mean", "pop_mean")] + [f"alpha:{e}" for e in experts]
    assert sorted(lines) == sorted(expected)
    for name, points in lines.items():
        assert len(points) == n_gen, name
        xs = [float(p.split(",")[0]) for p in points]
        assert xs == sorted(xs) and len(set(xs)) == n_gen  # one point per generation, in order
    bands = [p for p in root.iter(ns + "polygon") if p.get("class") == "band"]
    assert len(bands) == len(experts)
    assert all(len(b.get("points").split()) == 2 * n_gen for b in bands)
    text = " ".join(t.text or "" for t in root.iter(ns + "text"))
    assert "generation" in text and "accuracy" in text and "best so far" in text
    if averaged:
        assert f"averaged over {averaged} matrices" in text
    return root


def test_plot_result_json(tmp_path, experts):
    ex = write_examples(tmp_path / "ex.json", make_examples(n=3, seed=36))
    for per_layer in (False, True):
        res = tmp_path / f"result{int(per_layer)}.json"
        r = run([ZMIX, "adapt", "--model", MODEL_DIR, "--experts", ",".join(experts),
                 "--examples", ex, "--pop", "12", "--iters", "5", "--std-tol", "0",
                 "--bounds", "0.05,1", "--quiet", "--out", str(res)]
                + (["--per-layer"] if per_layer else []))
        assert r.rc == 0, r
        doc = json.load(open(res))
        n_gen = len(doc["history"])
        # the default method, separable CMA-ES, has its own population and spends the
        # budget of 12 x 5 evaluations
        assert doc["settings"]["method"] == "sep-cma"
        assert n_gen == -(-60 // doc["settings"]["pop_size"])
        svg = tmp_path / f"conv{int(per_layer)}.svg"
        r = run([ZMIX, "plot", str(res), "--out", str(svg)])
        assert r.rc == 0 and f"wrote {svg} ({n_gen} generations, 3 experts" in r.out, r
        check_svg(svg, n_gen, ["expert0", "expert1", "expert2"],
                  averaged=15 if per_layer else None)
        r = run([ZMIX, "plot", str(res), "--out", str(svg), "--json"])
        assert r.rc == 0 and r.json() == {"out": str(svg), "generations": n_gen, "experts": 3,
                                          "matrices_averaged": 15 if per_layer else 1}, r
    r = run([ZMIX, "plot", str(tmp_path / "ex.json"), "--out", str(tmp_path / "x.svg")])
    assert r.rc == 1 and "no 'history'" in r.err, r


def test_plot_job(shared_daemon, tmp_path):
    ex = write_examples(tmp_path / "ex.json", make_examples(n=3, seed=37))
    r = zmix(shared_daemon, "submit", "cli-plot", "--examples", ex, *SMALL, "--wait")
    assert r.rc == 0, r
    job = job_id(r)
    svg = tmp_path / "job.svg"
    r = zmix(shared_daemon, "plot", str(job), "--out", str(svg))
    assert r.rc == 0 and f"wrote {svg} (4 generations, 3 experts)" in r.out, r
    root = check_svg(svg, 4, ["expert0", "expert1", "expert2"])
    assert f"job {job}, task cli-plot (done, max_generations)" in root.find(
        "{http://www.w3.org/2000/svg}title").text
    # the history method itself: one entry per generation, the distribution per entry
    from zmix_client import Client
    with Client(shared_daemon.address) as c:
        h = c.call("history", {"job": job})["history"]
        st = c.status(job)
    assert [e["generation"] for e in h] == [1, 2, 3, 4]
    assert all(len(e["mean"]) == 3 and len(e["std"]) == 3 for e in h)
    assert h[-1]["best"] == st["best"]
    assert h[0]["elite_mean"]["accuracy"] >= h[0]["pop_mean"]["accuracy"]
    r = zmix(shared_daemon, "plot", "987654", "--out", str(svg))
    assert r.rc == 1 and "job 987654 not found" in r.err, r


def test_python_examples(shared_daemon, tmp_path):
    py = "/usr/bin/python3"
    ex = write_examples(tmp_path / "ex.json", make_examples(n=3, seed=38))
    script = os.path.join(SOURCE_DIR, "examples", "python")
    r = run([py, os.path.join(script, "submit_and_wait.py"), "py-task", ex, "--addr",
             shared_daemon.address, "--iters", "4", "--pop", "12"])
    assert r.rc == 0, r
    final = json.loads(r.out)
    assert final["state"] == "done" and final["generation"] >= 1
    assert re.search(r"job \d+: generation \d+/\d+: best acc", r.err), r
    out = tmp_path / "py.safetensors"
    r = run([py, os.path.join(script, "fetch_z.py"), "py-task", str(out), "--addr",
             shared_daemon.address])
    assert r.rc == 0 and "15 tensors, 960 floats" in r.out, r
    mine, meta = read_safetensors(out)
    assert meta["task"] == "py-task" and meta["job"] == str(final["job"])
    # the C client's file holds the very same vectors
    cfile = tmp_path / "c.safetensors"
    assert zmix(shared_daemon, "get", "py-task", "--out", str(cfile)).rc == 0
    theirs, _ = read_safetensors(cfile)
    assert mine == theirs
    r = run([py, os.path.join(script, "fetch_z.py"), "no-such-task", str(out), "--addr",
             shared_daemon.address])
    assert r.rc == 1 and "ENOTFOUND" in r.err, r


def test_tcp_with_token(tmp_path, experts):
    import socket as so
    from conftest import Daemon
    s = so.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    token = tmp_path / "token"
    token.write_text("cli-token-0123456789\n")
    d = Daemon(str(tmp_path), experts,
               extra=["--listen", f"tcp:127.0.0.1:{port}", "--token-file", str(token)]).start()
    try:
        addr = f"tcp:127.0.0.1:{port}"
        r = run([ZMIX, "info", "--connect", addr, "--token-file", str(token)])
        assert r.rc == 0 and "experts (3)" in r.out, r
        r = run([ZMIX, "jobs", "--json"], env={"ZMIX_ADDR": addr, "ZMIX_TOKEN_FILE": str(token)})
        assert r.rc == 0 and r.json() == {"jobs": []}, r
        r = run([ZMIX, "info", "--connect", addr])  # no token
        assert r.rc == 1 and "needs a token" in r.err, r
        wrong = tmp_path / "wrong"
        wrong.write_text("nope")
        r = run([ZMIX, "info", "--connect", addr, "--token-file", str(wrong)])
        assert r.rc == 1 and "refused the token" in r.err, r
        r = run([ZMIX, "info", "--connect", addr, "--token-file", str(tmp_path / "absent")])
        assert r.rc == 1 and "token file" in r.err, r
    finally:
        assert d.stop() == 0


def test_text_examples(shared_daemon, tmp_path):
    # stories260K has no tokenizer here: the daemon says so, the CLI names the file
    text = write_examples(tmp_path / "text.json", [{"prompt": "once upon", "target": " a"}])
    r = zmix(shared_daemon, "submit", "cli-text", "--examples", text)
    assert r.rc == 1 and r.err.startswith(f"zmix submit: {text}: examples[0].prompt"), r
    assert "tokenizer" in r.err and r.err.count("submit:") == 1, r
    # a model with a tokenizer (the demo's byte-level one) takes text examples as they are
    demo = tmp_path / "demo"
    r = run([ZMIX, "demo-init", str(demo), "--examples", "4", "--heldout", "0"])
    assert r.rc == 0, r
    manifest = json.load(open(demo / "demo.json"))
    from conftest import Daemon
    d = Daemon(str(tmp_path / "d"), [str(demo / e) for e in manifest["experts"]])
    d.args[d.args.index("--model") + 1] = str(demo / "model")
    os.makedirs(d.workdir, exist_ok=True)
    d.start()
    try:
        r = zmix(d, "submit", "demo-text", "--examples", str(demo / "task.json"), *SMALL,
                 "--wait", "--json")
        assert r.rc == 0, r
        assert r.json()["status"]["state"] == "done"
        # the same examples as token ids (demo-init writes both) make the same request: cached
        r = zmix(d, "submit", "demo-text", "--examples", str(demo / "task.tokens.json"), *SMALL,
                 "--json")
        assert r.rc == 0 and r.json()["cached"] is True, r
    finally:
        assert d.stop() == 0
