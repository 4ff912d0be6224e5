"""What a new user runs into first, each fixed: a TCP listener keeps the default Unix socket,
'-' as --out (standard output) and as --examples (standard input), a missing --factor-cache
directory refused before the factorisation, and a bare JSON list of examples named as such."""

import json
import os
import struct
import subprocess
import time

from cli_fixtures import ZMIX, requires_cli, run, write_examples, zmix
from conftest import MODEL_DIR, ZMIXD, free_port, make_examples

pytestmark = requires_cli

SMALL = ["--method", "cem", "--pop", "8", "--iters", "2", "--std-tol", "0", "--bounds", "0.05,1"]


def run_stdin(args, data, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("ZMIX_ADDR", "ZMIX_TOKEN_FILE")}
    p = subprocess.run(args, input=data, capture_output=True, env=env, cwd=cwd, timeout=120)
    return p.returncode, p.stdout, p.stderr.decode(errors="replace")


def test_tcp_listener_keeps_the_default_socket(experts, tmp_path):
    cache = tmp_path / "cache"
    port = free_port()
    log = open(tmp_path / "zmixd.log", "wb")
    proc = subprocess.Popen([ZMIXD, "--model", MODEL_DIR, "--experts", ",".join(experts),
                             "--cache-dir", str(cache), "--listen", f"tcp:127.0.0.1:{port}",
                             "--workers", "1"], stdout=log, stderr=log)
    try:
        sock = cache / "zmixd.sock"
        deadline = time.time() + 30
        while not sock.exists():
            assert proc.poll() is None and time.time() < deadline, \
                (tmp_path / "zmixd.log").read_text()
            time.sleep(0.05)
        r = run([ZMIX, "info", "--socket", str(sock)])
        assert r.rc == 0 and "experts (3)" in r.out, r
        r = run([ZMIX, "info", "--connect", f"tcp:127.0.0.1:{port}"])
        assert r.rc == 0 and "experts (3)" in r.out, r
    finally:
        proc.terminate()
        assert proc.wait(30) == 0
        log.close()


def test_out_dash_is_standard_output(shared_daemon, tmp_path):
    ex = write_examples(tmp_path / "ex.json", make_examples(n=3, seed=51))
    r = zmix(shared_daemon, "submit", "dash-out", "--examples", ex, *SMALL, "--wait")
    assert r.rc == 0, r
    job = int(r.out.split("job ")[1].split()[0])
    sock = ["--socket", shared_daemon.socket]
    # z' as safetensors on stdout, the report on stderr, no file named '-'
    rc, out, err = run_stdin([ZMIX, "get", "dash-out", "--out", "-", *sock], b"", cwd=tmp_path)
    assert rc == 0, err
    n = struct.unpack("<Q", out[:8])[0]
    header = json.loads(out[8:8 + n])
    assert len([k for k in header if k != "__metadata__"]) == 15
    assert "wrote standard output" in err and "accuracy" in err
    assert not (tmp_path / "-").exists()
    rc, out, err = run_stdin([ZMIX, "get", "dash-out", "--result", "-", *sock], b"", cwd=tmp_path)
    assert rc == 0 and "alpha" in json.loads(out), err
    rc, out, err = run_stdin([ZMIX, "get", "dash-out", "--result", "-", "--out", "-", *sock], b"")
    assert rc == 2 and "cannot both be standard output" in err, err
    rc, out, err = run_stdin([ZMIX, "plot", str(job), "--out", "-", *sock], b"", cwd=tmp_path)
    assert rc == 0 and b"<svg" in out[:200] and "wrote standard output" in err, err
    assert not (tmp_path / "-").exists()
    r = run([ZMIX, "export", "dash-out", "--format", "peft", "--out", "-", *sock])
    assert r.rc == 2 and "'-' (standard output) cannot hold one" in r.err, r


def test_adapt_out_dash_examples_dash_and_factor_cache(experts, tmp_path):
    exs = make_examples(n=3, seed=52)
    data = json.dumps({"examples": exs}).encode()
    base = [ZMIX, "adapt", "--model", MODEL_DIR, "--experts", ",".join(experts), "--quiet",
            *SMALL]
    rc, out, err = run_stdin([*base, "--examples", "-", "--out", "-"], data, cwd=tmp_path)
    assert rc == 0, err
    assert json.loads(out)["generations"] == 2
    assert not (tmp_path / "-").exists()
    rc, out, err = run_stdin([*base, "--examples", "-", "--z-out", "-"], data)
    assert rc == 2 and "--z-out -: standard output already carries the result JSON" in err, err
    rc, out, err = run_stdin([*base, "--examples", "-", "--out", str(tmp_path / "r.json"),
                              "--z-out", "-"], data)
    assert rc == 0 and out[8:9] == b"{", err
    # score reads standard input too
    rc, out, err = run_stdin([ZMIX, "score", "--model", MODEL_DIR, "--examples", "-"], data)
    assert rc == 0 and "accuracy" in json.loads(out), err
    # a missing factor cache directory: refused before the factorisation
    missing = tmp_path / "no" / "factors"
    rc, out, err = run_stdin([*base, "--examples", "-", "--factor-cache", str(missing)], data)
    assert rc == 1 and f"factor cache directory {missing}: No such file or directory " \
                       "(create it first)" in err, err
    assert not missing.exists()


def test_bare_list_of_examples_is_named(shared_daemon, tmp_path):
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(make_examples(n=2, seed=53)))
    want = 'the top level is a list, not a JSON object; expected {"examples": [{"prompt": '
    r = zmix(shared_daemon, "submit", "bare", "--examples", str(bare))
    assert r.rc != 0 and want in r.err and "bare.json" in r.err, r
    r = run([ZMIX, "score", "--model", MODEL_DIR, "--examples", str(bare)])
    assert r.rc != 0 and want in r.err, r
    rc, out, err = run_stdin([ZMIX, "score", "--model", MODEL_DIR, "--examples", "-"],
                             bare.read_bytes())
    assert rc != 0 and "standard input: " + want in err, err
    other = tmp_path / "other.json"
    other.write_text('"examples"')
    r = run([ZMIX, "score", "--model", MODEL_DIR, "--examples", str(other)])
    assert r.rc != 0 and 'expected an object {"examples": [' in r.err, r


def test_messages_say_things_once_and_name_experts(shared_daemon, tmp_path):
    ex = write_examples(tmp_path / "ex.json", make_examples(n=3, seed=54))
    # the daemon's refusal once prefixed, not "submit: submit:"
    r = zmix(shared_daemon, "submit", "pop-big", "--examples", ex, "--pop", "100000")
    assert r.rc != 0 and "submit: submit:" not in r.err, r
    assert r.err.startswith("zmix submit: cem: field 'pop'"), r
    r = zmix(shared_daemon, "submit", "named", "--examples", ex, *SMALL, "--wait")
    assert r.rc == 0, r
    assert "alpha expert0 " in r.out and "  expert2 " in r.out, r
    job = int(r.out.split("job ")[1].split()[0])
    r = zmix(shared_daemon, "status", str(job))
    assert r.rc == 0 and "best alpha expert0 " in r.out, r
    # a finished search's stop rule once, not again as its reason
    assert r.out.count("max_generations") == 1, r
    r = zmix(shared_daemon, "get", "named")
    assert r.rc == 0 and "alpha expert0 " in r.out, r
    # per-layer alpha: each expert's mean over the matrices, named
    r = zmix(shared_daemon, "submit", "named-pl", "--examples", ex, *SMALL, "--per-layer",
             "--wait")
    assert r.rc == 0 and "alpha (mean over 15 matrices) expert0 " in r.out, r


def test_every_daemon_command_documents_the_environment():
    for cmd in ("submit", "status", "wait", "cancel", "jobs", "get", "tasks", "evict", "info",
                "stats", "plot", "export"):
        r = run([ZMIX, cmd, "--help"])
        assert r.rc == 0 and "$ZMIX_ADDR" in r.out and "$ZMIX_TOKEN_FILE" in r.out, (cmd, r)
