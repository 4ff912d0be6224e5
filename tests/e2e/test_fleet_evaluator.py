"""The reference external evaluator (examples/python/evaluator.py, PyTorch) in a real fleet:

- parity: the same chunks (α rows shared, per-layer, normalised, without rescale, z′ rows,
  degenerate rows, exact-match and multiple-choice sets) scored by a zmixd member and by the
  evaluator give the same accuracies and log-likelihoods / margins within LOGLIK_TOL;
- identity: the evaluator computes zmixd's model fingerprint and experts digest, refuses to
  join a fleet of other experts, and answers a chunk for another model with a failure;
- a mixed fleet: one zmixd and the evaluator share a job on a planted task, both score
  chunks, and the job ends as a single daemon's does (solved, α close to it).

The test drives the stream itself for the parity chunks (it writes chunks as a driver would,
proto/FLEET.md §3), so every score compared comes through the protocol. Skipped, saying why,
only where redis-server or PyTorch is missing (scripts/install-deps.sh installs both)."""

import hashlib
import importlib.util
import json
import math
import os
import random
import signal
import struct
import subprocess
import sys

import msgpack
import pytest

from conftest import MODEL_DIR, SOURCE_DIR, ZMIXD, Daemon, wait_for
from test_fleet import REDIS_SERVER, Redis, member_of

EVALUATOR = os.path.join(SOURCE_DIR, "examples", "python", "evaluator.py")
PLANT = os.environ.get("ZMIX_PLANT") or (
    os.path.join(os.path.dirname(ZMIXD), "tests", "adapt", "plant_task") if ZMIXD else "")

pytestmark = [
    pytest.mark.skipif(REDIS_SERVER is None,
                       reason="redis-server not installed (scripts/install-deps.sh)"),
    pytest.mark.skipif(importlib.util.find_spec("torch") is None,
                       reason="PyTorch not importable by %s (Debian: python3-torch, installed "
                              "by scripts/install-deps.sh)" % sys.executable),
]

# Tolerance of the evaluator's log-likelihoods and margins against zmixd's (absolute, in
# nats per token; measured on these chunks: see docs/fleet.md, "External evaluators").
LOGLIK_TOL = 1e-4
# The planted task's search, as in the other planted-task tests: small enough for ~10 s.
CEM = {"pop": 16, "iters": 30, "seed": 5, "std_floor": 0.02, "std_tol": 0}


@pytest.fixture
def redis(tmp_path):
    """A redis-server of the test's own on a loopback port (test_fleet.py's helper)."""
    r = Redis(str(tmp_path))
    yield r
    r.stop()


def planted(tmp_path, n_choices, seed):
    if not PLANT or not os.access(PLANT, os.X_OK):
        pytest.skip("ZMIX_PLANT (the plant_task binary) not found")
    d = tmp_path / f"planted-{n_choices}-{seed}"
    d.mkdir()
    out = json.loads(subprocess.run([PLANT, MODEL_DIR, str(d), str(n_choices), str(seed)],
                                    check=True, capture_output=True, text=True).stdout)
    with open(d / "ex.json") as f:
        out["examples"] = json.load(f)["examples"]
    return out


class Evaluator:
    """evaluator.py as a process of its own (the interpreter running the tests)."""

    def __init__(self, workdir, redis, experts, *extra):
        self.log = os.path.join(workdir, "evaluator.log")
        self.args = [sys.executable, EVALUATOR, "--redis", redis.url, "--model", MODEL_DIR,
                     "--experts", ",".join(experts), "--threads", "1", "--log-level", "debug",
                     *extra]
        self.proc = None

    def start(self, timeout=60):
        self.logf = open(self.log, "ab")
        env = dict(os.environ, OMP_NUM_THREADS="1")
        self.proc = subprocess.Popen(self.args, stdout=self.logf, stderr=self.logf, env=env)
        wait_for(lambda: self.proc.poll() is not None or "joined" in self.log_text(),
                 timeout=timeout, interval=0.05)
        if self.proc.poll() is not None:
            raise RuntimeError(f"evaluator exited with {self.proc.returncode}: "
                               f"{self.log_text()}")
        return self

    def stop(self):
        if self.proc is None:
            return None
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            rc = self.proc.wait()
        self.proc = None
        self.logf.close()
        return rc

    def log_text(self):
        with open(self.log, errors="replace") as f:
            return f.read()


class Driver:
    """Publishes chunks the way a driver does (proto/FLEET.md §1–§3) and reads the results."""

    MEMBER = "parity-test-1-00000000"

    def __init__(self, redis, info):
        self.redis, self.info, self.seq = redis, info, 0

    def put_examples(self, examples):
        value = msgpack.packb({"v": 1, "examples": examples})
        key = "zmix:examples:" + hashlib.sha256(value).hexdigest()
        self.redis.command("SET", key, value, "EX", 3600)
        return key

    def step(self, calls, fingerprint=None):
        """One step of chunks; calls: dicts of examples key, kind, rows and settings. Returns
        the results in call order once every chunk has one."""
        self.seq += 1
        step_key = f"zmix:step:{self.MEMBER}:{self.seq}"
        results = f"zmix:results:{self.MEMBER}:{self.seq}"
        self.redis.command("SET", step_key, "0", "EX", 300)
        for i, c in enumerate(calls):
            rows = [float(x) for row in c["rows"] for x in row]
            chunk = {"v": 1, "id": f"{self.MEMBER}:{self.seq}:{i}", "job": 0,
                     "step_key": step_key, "results": results, "field": str(i),
                     "done": f"zmix:done:{self.MEMBER}",
                     "model_fingerprint": fingerprint or self.info["model"]["fingerprint"],
                     "experts_digest": self.info["experts_digest"], "examples": c["examples"],
                     "kind": c.get("kind", "alpha"), "n": len(c["rows"]),
                     "dim": len(c["rows"][0]), "rows": struct.pack("<%df" % len(rows), *rows),
                     "per_layer": c.get("per_layer", 0), "normalize": c.get("normalize", 0),
                     "rescale": c.get("rescale", 1),
                     "choice_norm": c.get("choice_norm", "per_token"), "detail": None}
            self.redis.command("XADD", "zmix:chunks", "*", "chunk",
                               msgpack.packb(chunk, use_bin_type=True))
        wait_for(lambda: self.redis.command("HLEN", results) == len(calls), timeout=120,
                 interval=0.02)
        out = [msgpack.unpackb(self.redis.command("HGET", results, str(i)), raw=False)
               for i in range(len(calls))]
        self.redis.command("DEL", step_key, results)
        return out


def parity_calls(driver, exact, choice, K, M, z_total):
    rng = random.Random(2026)
    ex_key = driver.put_examples(exact["examples"])
    mc_key = driver.put_examples(choice["examples"])
    star = exact["alpha_star"]
    shared = [star, [1, 0, 0, 0], [0.25] * 4, [s + 0.05 for s in star],
              [s * 1.5 for s in star]] + [[rng.uniform(0, 1) for _ in range(K)]
                                           for _ in range(8)]
    degenerate = [[math.nan, 0.5, 0.5, 0.5], [0.0] * K]  # NaN α; Σσ⊙z′ = 0 under rescale
    per_layer = [[s + rng.uniform(-0.15, 0.15) for _ in range(M) for s in star]
                 for _ in range(4)]
    z = [[1.0] * z_total] + [[1.0 + rng.gauss(0, 0.2) for _ in range(z_total)]
                             for _ in range(3)]
    return [
        {"examples": ex_key, "rows": shared + degenerate},
        {"examples": ex_key, "rows": shared[:6], "rescale": 0},
        # Not normalised rows (sums 0.5 to 3), normalised by the scorer; [1, -1, 0, 0] sums
        # to zero: degenerate.
        {"examples": ex_key, "rows": [[2 * a for a in star], [a / 3 for a in star],
                                      [1, -1, 0, 0], shared[7]], "normalize": 1},
        {"examples": ex_key, "rows": per_layer, "per_layer": 1},
        {"examples": ex_key, "rows": z, "kind": "z"},
        {"examples": ex_key, "rows": z[1:], "kind": "z", "rescale": 0},
        {"examples": mc_key, "rows": shared},
        {"examples": mc_key, "rows": shared[:6], "choice_norm": "sum"},
    ]


def test_scores_match_zmixd_and_identity_is_checked(tmp_path, experts, redis):
    exact = planted(tmp_path, 0, 2026)
    choice = planted(tmp_path, 4, 2027)
    ex_experts = exact["experts"]  # plant_task's experts do not depend on the set's kind
    a = Daemon(str(tmp_path / "a"), ex_experts,
               extra=("--store", redis.url, "--workers", "1")).start()
    try:
        with a.client() as c:
            info = c.info()
        driver = Driver(redis, info)
        # M adapted matrices (mlp: 3 a layer) of rank 64 on stories260K.
        n_layers = json.load(open(os.path.join(MODEL_DIR, "config.json")))["num_hidden_layers"]
        M, K = 3 * n_layers, len(ex_experts)
        calls = parity_calls(driver, exact, choice, K, M, M * 64)
        by_c = driver.step(calls)
        pid_a = a.proc.pid
    finally:
        assert a.stop() == 0, a.log_text()
    pid_of = lambda member: member.split("-")[-2]  # HOST-PID-RANDOM
    assert all(r["ok"] and pid_of(r["member"]) == str(pid_a) for r in by_c), by_c

    # The evaluator alone in the fleet now (the daemon has left it; its identity stays).
    ev = Evaluator(str(tmp_path), redis, ex_experts).start()
    try:
        by_py = driver.step(calls)
        assert all(pid_of(r["member"]) == str(ev.proc.pid) for r in by_py), by_py
        # A chunk for another base model is answered with a failure saying so (§5.3).
        other = driver.step([calls[0]], fingerprint="0" * 64)[0]
        assert other["ok"] is False and "chunk for base model 0000000000000000" in \
            other["error"], other
    finally:
        assert ev.stop() == 0, ev.log_text()

    worst_ll = worst_margin = 0.0
    n_rows = n_nan = 0
    for call, rc, rp in zip(calls, by_c, by_py):
        assert rp["ok"], rp
        assert len(rp["scores"]) == len(call["rows"])
        for sc, sp in zip(rc["scores"], rp["scores"]):
            n_rows += 1
            if math.isnan(sc["loglik"]):  # degenerate: NaN/NaN/NaN for both
                assert all(math.isnan(sp[k]) for k in ("accuracy", "loglik", "margin")), sp
                n_nan += 1
                continue
            assert sp["accuracy"] == sc["accuracy"], (call, sc, sp)
            worst_ll = max(worst_ll, abs(sp["loglik"] - sc["loglik"]))
            worst_margin = max(worst_margin, abs(sp["margin"] - sc["margin"]))
    print(f"parity over {n_rows} rows ({n_nan} degenerate): max |Δloglik| {worst_ll:.3g}, "
          f"max |Δmargin| {worst_margin:.3g}")
    assert n_nan == 3
    assert worst_ll <= LOGLIK_TOL and worst_margin <= LOGLIK_TOL
    # Some rows get examples right, some do not: accuracy equality means something here.
    accs = {s["accuracy"] for r in by_c for s in r["scores"] if not math.isnan(s["accuracy"])}
    assert len(accs) >= 3, accs

    # Another expert order is another expert set: the evaluator refuses to join, saying so.
    p = subprocess.run([sys.executable, EVALUATOR, "--redis", redis.url, "--model", MODEL_DIR,
                        "--experts", ",".join(reversed(ex_experts))],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 1, p.stderr
    assert "cannot join the fleet: the experts differ" in p.stderr, p.stderr


def run_job(d, task, examples, timeout=180):
    with d.client(timeout=timeout + 30) as c:
        job = c.submit(task, examples, cem=CEM)["job"]
        r = c.wait(job, timeout=timeout)
        assert not r["timed_out"], r
        st = r["status"]
        assert st["state"] == "done", st
        return st, c.get(task)


def test_mixed_fleet_converges_as_a_single_daemon(tmp_path, experts, redis):
    task = planted(tmp_path, 0, 2028)
    single = Daemon(str(tmp_path / "single"), task["experts"], extra=("--workers", "1")).start()
    try:
        st_ref, res_ref = run_job(single, "planted", task["examples"])
    finally:
        assert single.stop() == 0, single.log_text()

    b = Daemon(str(tmp_path / "b"), task["experts"],
               extra=("--store", redis.url, "--workers", "1")).start()
    ev = None
    try:
        ev = Evaluator(str(tmp_path), redis, task["experts"]).start()
        st, res = run_job(b, "planted", task["examples"])
        scored = redis.scored()
        by_b, by_ev = member_of(b.proc.pid, scored), member_of(ev.proc.pid, scored)
    finally:
        rc_ev = ev.stop() if ev else 0
        assert b.stop() == 0, b.log_text()
    assert rc_ev == 0, ev.log_text()
    # Both implementations scored chunks of the job.
    assert by_b > 0 and by_ev > 0, scored
    print(f"chunks scored: zmixd {by_b}, evaluator {by_ev}; α fleet {res['alpha']}, "
          f"single {res_ref['alpha']}")
    # Converged as the single daemon did: the planted task solved by both, with the same
    # number of evaluations, and α close (not necessarily bit-identical: another
    # implementation's scores may order candidates closer than its tolerance otherwise).
    assert st_ref["best"]["accuracy"] == 1.0, st_ref
    assert st["best"]["accuracy"] == st_ref["best"]["accuracy"], (st, st_ref)
    assert st["evaluations"] == st_ref["evaluations"]
    assert abs(st["best"]["loglik"] - st_ref["best"]["loglik"]) < 0.05, (st, st_ref)
    # Under rescale, α and s·α compose the same W′: compare directions (α / Σα), which a
    # flipped ranking would move far less than the scale.
    unit = lambda a: [float(x) / sum(float(y) for y in a) for x in a]
    diff = max(abs(x - y) for x, y in zip(unit(res["alpha"]), unit(res_ref["alpha"])))
    assert diff < 0.05, (res["alpha"], res_ref["alpha"])


def test_evaluator_takes_over_stale_chunks_and_answers_unreadable_ones(tmp_path, redis):
    """§5: a chunk left pending by a consumer that died is taken over after --claim-ms; a
    chunk of another format is answered with a failure, not dropped; the evaluator is in the
    member list while it runs and leaves it when it stops."""
    task = planted(tmp_path, 0, 2029)
    # The fleet's identity and group, from a daemon that then leaves.
    a = Daemon(str(tmp_path / "a"), task["experts"], extra=("--store", redis.url)).start()
    with a.client() as c:
        info = c.info()
    assert a.stop() == 0, a.log_text()
    driver = Driver(redis, info)
    ex_key = driver.put_examples(task["examples"])
    # A consumer reads the chunk and dies without answering it.
    driver.seq += 1
    step_key = f"zmix:step:{Driver.MEMBER}:{driver.seq}"
    results = f"zmix:results:{Driver.MEMBER}:{driver.seq}"
    redis.command("SET", step_key, "0", "EX", 300)
    rows = struct.pack("<4f", *task["alpha_star"])
    chunk = {"v": 1, "id": f"{Driver.MEMBER}:{driver.seq}:0", "job": 0, "step_key": step_key,
             "results": results, "field": "0", "done": f"zmix:done:{Driver.MEMBER}",
             "model_fingerprint": info["model"]["fingerprint"],
             "experts_digest": info["experts_digest"], "examples": ex_key, "kind": "alpha",
             "n": 1, "dim": 4, "rows": rows, "per_layer": 0, "normalize": 0, "rescale": 1,
             "choice_norm": "per_token", "detail": None}
    redis.command("XADD", "zmix:chunks", "*", "chunk", msgpack.packb(chunk, use_bin_type=True))
    assert redis.command("XREADGROUP", "GROUP", "zmix:scorers", "dead/0", "COUNT", 1,
                         "STREAMS", "zmix:chunks", ">")
    ev = Evaluator(str(tmp_path), redis, task["experts"], "--claim-ms", "500").start()
    try:
        members = [k for k in redis.command("KEYS", "zmix:member:*") if b":info" not in k]
        assert len(members) == 1 and str(ev.proc.pid).encode() in members[0], members
        raw = wait_for(lambda: redis.command("HGET", results, "0"), timeout=30)
        result = msgpack.unpackb(raw, raw=False)
        assert result["ok"] and result["scores"][0]["accuracy"] == 1.0, result
        # The notification follows the result (not in the same command).
        wait_for(lambda: redis.command("LRANGE", chunk["done"], 0, -1) ==
                 [chunk["id"].encode()], timeout=10)
        assert "took over a chunk pending for more than 500 ms" in ev.log_text()
        # Another format: a failure saying which, then the notification and the ack.
        bad = {"v": 2, "id": "elsewhere-1-0:7:0", "results": "zmix:results:elsewhere-1-0:7",
               "field": "0", "done": "zmix:done:elsewhere-1-0"}
        redis.command("XADD", "zmix:chunks", "*", "chunk", msgpack.packb(bad))
        raw = wait_for(lambda: redis.command("HGET", bad["results"], "0"), timeout=30)
        result = msgpack.unpackb(raw, raw=False)
        assert result["ok"] is False and "format 2, this evaluator reads 1" in result["error"]
        wait_for(lambda: redis.command("XLEN", "zmix:chunks") == 0 and
                 redis.pending_by_consumer() == {}, timeout=10)
    finally:
        assert ev.stop() == 0, ev.log_text()
    assert redis.command("KEYS", "zmix:member:*") == []


def test_bad_settings_and_passwords_are_refused_clearly(tmp_path, experts):
    def fails(*args):
        p = subprocess.run([sys.executable, EVALUATOR, *args], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode != 0, p.stderr
        return p.returncode, p.stderr

    model = ("--model", MODEL_DIR)
    rc, err = fails("--redis", "redis://127.0.0.1:notaport", *model, "--experts", experts[0])
    assert rc == 2 and "port and database must be numbers" in err
    rc, err = fails("--redis", "redis://u:secret@127.0.0.1:1", *model, "--experts", experts[0])
    assert rc == 2 and "--password-file" in err and "secret" not in err
    # Experts for the MLP set under --adapt all: the file and the key at fault.
    rc, err = fails("--redis", "redis://127.0.0.1:1", *model, "--experts", experts[0],
                    "--adapt", "all")
    assert rc == 1 and f"{experts[0]}: key 'model.layers.0.self_attn.q_proj.weight' is " \
                       f"missing" in err, err
    rc, err = fails("--redis", "redis://127.0.0.1:1", "--model", str(tmp_path),
                    "--experts", experts[0])
    assert rc == 1 and f"{tmp_path}/config.json" in err, err

    r = Redis(str(tmp_path), password="right-password-0123")
    try:
        base = ("--redis", r.url, *model, "--experts", ",".join(experts))
        rc, err = fails(*base)
        assert rc == 1 and "Redis requires a password" in err, err
        wrong = tmp_path / "wrong"
        wrong.write_text("wrong-password\n")
        wrong.chmod(0o600)
        rc, err = fails(*base, "--password-file", str(wrong))
        assert rc == 1 and "Redis refused the password" in err and "wrong-password" not in err
        right = tmp_path / "right"
        right.write_text("right-password-0123\n")
        right.chmod(0o600)
        ev = Evaluator(str(tmp_path), r, experts, "--password-file", str(right)).start()
        assert ev.stop() == 0, ev.log_text()
    finally:
        r.stop()
