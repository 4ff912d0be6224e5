#!/usr/bin/env python3
"""A model of a fleet of N machines, from measurements on this one (docs/fleet.md, "A model of
N machines").

Three measurements, each on fresh processes and a fresh redis-server on a loopback port:

  rtt      build/bench/bench_fleet_rtt: the Redis commands a chunk costs the driver and the
           scorer (src/fleet/fleet.c), timed one by one, median of --rtt-iters chunks, with
           the byte sizes of the real messages of the measured workload.
  chunks   one zmixd --store --workers 1 (one scorer thread) and this script as the driver:
           chunks of n candidates on example sets of several sizes are published on the
           stream exactly as proto/FLEET.md §3 says; the time is the `seconds` the daemon's
           scorer writes into each result (its scoring, the model's real forward passes on
           stories260K), median of --repeat chunks per point, plus this script's
           publish-to-result latency.
  steps    one job run three ways (local pool, fleet of one, fleet of two on this machine);
           a subscribed connection timestamps each generation's progress notification:
           wall time per generation, the job's scoring time per generation (the status's
           `elapsed` between notifications) and the rest (the serial part: CEM update,
           checkpoint, the event loop); in the fleet runs, the chunk times from the
           daemon's debug log.

Then the model (docs/fleet.md) is evaluated: T(N) for N = 1, 2, 4, 8, 16 machines of --cores
cores at loopback and LAN round-trip times, the chunk size that keeps the per-chunk overhead
under 5%, and the prediction of the fleet-of-one and fleet-of-two steps against what the
steps measurement saw.

    OPENBLAS_NUM_THREADS=1 bench/fleet_model.py --build build [--quick] [--json out.json]
        [--repeat 5] [--runs 3] [--skip steps,chunks,rtt,shape15m]
    bench/fleet_model.py --report out.json      (the model again from saved measurements)

A measurement, not a test; on a shared machine, quote medians and same-run ratios.
"""
import argparse
import hashlib
import json
import math
import os
import random
import re
import shutil
import socket
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import msgpack

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))

REDIS_SERVER = shutil.which("redis-server")


class Redis:
    """A redis-server of our own on loopback, and a persistent RESP connection to it."""

    def __init__(self, workdir):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        self.port = s.getsockname()[1]
        s.close()
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        self.log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", self.dir,
             "--save", "", "--appendonly", "no"], stdout=self.log, stderr=self.log)
        self.url = f"redis://127.0.0.1:{self.port}"
        deadline = time.time() + 20
        while True:
            try:
                self.sock = socket.create_connection(("127.0.0.1", self.port), timeout=60)
                break
            except OSError:
                if time.time() > deadline:
                    raise
                time.sleep(0.05)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.f = self.sock.makefile("rwb")
        assert self.command("PING") == "PONG"

    def command(self, *args):
        out = [b"*%d\r\n" % len(args)]
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        self.f.write(b"".join(out))
        self.f.flush()
        return self._read()

    def _read(self):
        line = self.f.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            return None if n < 0 else self.f.read(n + 2)[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def stop(self):
        try:
            self.f.close()
            self.sock.close()
        except OSError:
            pass
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def examples_message(ex):
    return msgpack.packb({"v": 1, "examples": ex})


def alpha_rows(n, k, rng):
    rows = []
    for _ in range(n):
        a = [rng.random() + 0.05 for _ in range(k)]
        s = sum(a)
        rows += [x / s for x in a]
    return struct.pack("<%df" % len(rows), *rows)


MEMBER = "fleetmodel-1-0"


def chunk_message(seq, index, n, k, ex_key, info, rng):
    return msgpack.packb({
        "v": 1, "id": f"{MEMBER}:{seq}:{index}", "job": 1,
        "step_key": f"zmix:step:{MEMBER}:{seq}", "results": f"zmix:results:{MEMBER}:{seq}",
        "field": str(index), "done": f"zmix:done:{MEMBER}",
        "model_fingerprint": info["model"]["fingerprint"],
        "experts_digest": info["experts_digest"], "examples": ex_key, "kind": "alpha",
        "n": n, "dim": k, "rows": alpha_rows(n, k, rng), "per_layer": 0, "normalize": 0,
        "rescale": 1, "choice_norm": "per_token", "detail": None}, use_bin_type=True)


def result_size(n):
    """Bytes of a success result of n scores as a daemon writes it (proto/FLEET.md §4)."""
    return len(msgpack.packb({"v": 1, "id": f"{MEMBER}:12:3", "member": MEMBER, "ok": True,
                              "seconds": 0.1, "scores": [{"accuracy": 0.5, "loglik": -1.5,
                                                          "margin": -0.25}] * n}))


# ---- rtt -------------------------------------------------------------------------------

def measure_rtt(args, work, sizes):
    r = Redis(os.path.join(work, "rtt"))
    try:
        out = subprocess.run(
            [os.path.join(args.build, "bench", "bench_fleet_rtt"), "--port", str(r.port),
             "--iters", str(args.rtt_iters), "--chunks-per-step", str(sizes["chunks_per_step"]),
             "--chunk-bytes", str(sizes["chunk"]), "--result-bytes", str(sizes["result"]),
             "--examples-bytes", str(sizes["examples"])],
            check=True, capture_output=True, text=True).stdout
        return json.loads(out)
    finally:
        r.stop()


# ---- chunks ------------------------------------------------------------------------------

def measure_chunks(args, work, experts, configs, ns):
    from conftest import Daemon, make_examples
    r = Redis(os.path.join(work, "chunks"))
    d = Daemon(os.path.join(work, "chunks", "a"), experts,
               extra=("--workers", "1", "--log-level", "info", "--store", r.url)).start()
    rng = random.Random(11)
    points = []
    try:
        with d.client(timeout=60) as c:
            info = c.info()
        k = len(experts)
        seq = 0
        for (e, p, t) in configs:
            ex = make_examples(n=e, prompt_len=p, target_len=t, seed=5)
            blob = examples_message(ex)
            ex_key = "zmix:examples:" + hashlib.sha256(blob).hexdigest()
            r.command("SET", ex_key, blob, "EX", 3600)
            for n in ns:
                secs, lat = [], []
                for rep in range(args.repeat + 1):  # the first reads the examples: not kept
                    seq += 1
                    r.command("SET", f"zmix:step:{MEMBER}:{seq}", 1, "EX", 300)
                    msg = chunk_message(seq, 0, n, k, ex_key, info, rng)
                    t0 = time.perf_counter()
                    r.command("XADD", "zmix:chunks", "*", "chunk", msg)
                    got = r.command("BLPOP", f"zmix:done:{MEMBER}", 120)
                    raw = r.command("HGET", f"zmix:results:{MEMBER}:{seq}", "0")
                    t1 = time.perf_counter()
                    assert got, "no result in 120 s"
                    res = msgpack.unpackb(raw, raw=False)
                    assert res["ok"], res
                    r.command("DEL", f"zmix:step:{MEMBER}:{seq}", f"zmix:results:{MEMBER}:{seq}")
                    if rep > 0:
                        secs.append(res["seconds"])
                        lat.append(t1 - t0)
                pt = {"examples": e, "prompt": p, "target": t, "tokens": e * (p + t),
                      "candidates": n, "chunk_bytes": len(msg), "examples_bytes": len(blob),
                      "seconds": statistics.median(secs), "seconds_all": secs,
                      "latency": statistics.median(lat),
                      "overhead": statistics.median(l - s for l, s in zip(lat, secs))}
                points.append(pt)
                print(f"  chunk {e:3d}x{p}+{t} n={n:2d}: {pt['seconds'] * 1e3:8.2f} ms scoring, "
                      f"{pt['overhead'] * 1e3:6.2f} ms publish-to-result beyond it "
                      f"(median of {args.repeat})", flush=True)
    finally:
        d.stop()
        r.stop()
    return points


def per_candidate(points):
    """Per workload (example set), the median over the measured chunk sizes of the scoring
    time per candidate, and the spread of that ratio across sizes."""
    by_cfg = {}
    for pt in points:
        by_cfg.setdefault((pt["examples"], pt["prompt"], pt["target"], pt["tokens"]), []).append(
            pt["seconds"] / pt["candidates"])
    return [{"examples": e, "prompt": p, "target": t, "tokens": tok,
             "per_candidate": statistics.median(v), "min": min(v), "max": max(v)}
            for (e, p, t, tok), v in by_cfg.items()]


def measure_shape15m(args):
    """The 15M shape (random weights, bench_score): seconds per chunk of n candidates."""
    out = []
    for n in (1, 4, 16):
        text = subprocess.run(
            [os.path.join(args.build, "bench", "bench_score"), "--shape", "15m", "--threads", "1",
             "--runs", "3", "--naive", "1", "--candidates", str(n), "--examples", "16",
             "--prompt", "48", "--target", "4", "--shared-alpha"],
            check=True, capture_output=True, text=True).stdout
        m = re.search(r"fast\[[^\]]*\]: ([0-9.]+) candidates/s", text)
        cps = float(m.group(1))
        out.append({"candidates": n, "tokens": 16 * 52, "seconds": n / cps})
        print(f"  15m shape 16x48+4 n={n:2d}: {n / cps * 1e3:8.1f} ms per chunk", flush=True)
    return out


# ---- steps -------------------------------------------------------------------------------

CHUNK_LOG = re.compile(r"fleet: chunk (\S+?):(\d+):(\d+): (\d+) candidates in ([0-9.]+) s")


def measure_steps(args, work, experts):
    from conftest import Daemon, make_examples
    ex = make_examples(n=args.examples, prompt_len=args.prompt, target_len=args.target, seed=5)
    cem = {"pop": 16, "iters": args.generations, "elite": 0.25, "std_tol": 0}  # as fleet_overhead.py
    runs = {}
    for rep in range(args.runs):
        for kind in ("local", "fleet1", "fleet2"):
            dd = os.path.join(work, f"steps-{kind}-{rep}")
            redis = Redis(dd) if kind != "local" else None
            level = "debug" if redis else "info"
            extra = ("--workers", str(args.workers), "--log-level", level)
            store = ("--store", redis.url) if redis else ()
            daemons = [Daemon(os.path.join(dd, "a"), experts, extra=extra + store).start()]
            if kind == "fleet2":
                daemons.append(Daemon(os.path.join(dd, "b"), experts, extra=extra + store).start())
            try:
                with daemons[0].client(timeout=600) as c:
                    c.subscribe()
                    t0 = time.perf_counter()
                    job = c.submit(f"model{rep}", ex, cem=cem)["job"]
                    marks = [(t0, 0.0, -1)]
                    state = None
                    while state not in ("done", "failed", "cancelled"):
                        msg = c.read_message(timeout=600)
                        if msg[0] != 2 or msg[1] != "progress" or msg[2]["job"] != job:
                            continue
                        st = msg[2]
                        state = st["state"]
                        marks.append((time.perf_counter(), st["elapsed"], st["generation"]))
                    assert state == "done", st
            finally:
                logs = []
                for dm in daemons:
                    dm.stop()
                    with open(dm.log, errors="replace") as f:
                        logs.append(f.read())
                if redis:
                    redis.stop()
            # Generations 2..G: from one generation's notification to the next (the first
            # interval also holds the job's start and the baselines; the last, the validation).
            gens = [(b[0] - a[0], b[1] - a[1]) for a, b in zip(marks, marks[1:])
                    if a[2] >= 1 and b[2] == a[2] + 1]
            wall = [w for w, _ in gens]
            scoring = [s for _, s in gens]
            chunks = []
            for text in logs:
                for m in CHUNK_LOG.finditer(text):
                    chunks.append((m.group(1), int(m.group(2)), int(m.group(3)), int(m.group(4)),
                                   float(m.group(5))))
            runs.setdefault(kind, []).append({
                "wall": statistics.median(wall), "scoring": statistics.median(scoring),
                "serial": statistics.median(w - s for w, s in gens),
                "generations": len(gens), "chunks": chunks,
                "alpha": st["best_alpha"]})
            print(f"  {kind:6s} run {rep}: {statistics.median(wall) * 1e3:7.1f} ms per generation "
                  f"(scoring window {statistics.median(scoring) * 1e3:7.1f} ms), "
                  f"{len(chunks)} chunks logged", flush=True)
    return runs


def chunk_time_in_run(run):
    """Median scoring time of the generation chunks of a fleet run (every step but the first,
    the baselines, and the last, the validation), their sizes and their number per step."""
    by_step = {}
    for member, seq, idx, n, s in run["chunks"]:
        by_step.setdefault(seq, []).append((n, s))
    seqs = sorted(by_step)[1:-1]
    gen = [by_step[q] for q in seqs]
    times = [s for cs in gen for _, s in cs]
    sizes = sorted({n for cs in gen for n, _ in cs})
    per_step = statistics.median(len(cs) for cs in gen) if gen else 0
    return (statistics.median(times) if times else float("nan")), sizes, per_step


# ---- the model ---------------------------------------------------------------------------

def per_chunk_costs(rtt, lan_rtt_s):
    """Scorer and driver costs per chunk, and the driver's per-step cost, at a network round
    trip of lan_rtt_s (None: loopback as measured). A command at RTT x costs its loopback
    time plus (x - loopback PING)."""
    m = {k: v * 1e-6 for k, v in rtt["median_us"].items()}
    extra = 0.0 if lan_rtt_s is None else max(0.0, lan_rtt_s - m["ping"])
    scorer = sum(m[c] for c in ("xreadgroup", "exists", "hexists", "hsetnx", "pipeline6")) \
        + 5 * extra
    pub = m["xadd"] + extra
    collect = m["blpop"] + m["hget"] + 2 * extra
    step = m["set_step"] + m["set_examples"] + m["del_step"] + 3 * extra
    get_ex = m["get_examples"] + extra
    return {"scorer": scorer, "publish": pub, "collect": collect, "step": step, "get_ex": get_ex}


def step_time(n_machines, cores, chunks, t_chunk, serial, costs):
    """Time of one step (docs/fleet.md): the serial part, the driver's per-step commands and
    publication of every chunk, the waves of chunks over N*c scorers each costing the chunk's
    scoring and the scorer's round trips, and the collection of the last chunk's result."""
    waves = math.ceil(chunks / (n_machines * cores))
    return (serial + costs["step"] + chunks * costs["publish"]
            + waves * (t_chunk + costs["scorer"]) + costs["collect"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--cores", type=int, default=2, help="cores (scorers) per machine in the model")
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=48)
    ap.add_argument("--target", type=int, default=4)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--rtt-iters", type=int, default=3000)
    ap.add_argument("--skip", default="")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", help="write every measurement and the model's numbers here")
    ap.add_argument("--report", metavar="JSON",
                    help="measure nothing: print the model again from a --json file")
    args = ap.parse_args()
    if args.report:
        with open(args.report) as f:
            out = json.load(f)
        for key in ("workers", "cores"):
            setattr(args, key, out["args"][key])
        report(args, out)
        if args.json:
            with open(args.json, "w") as f:
                json.dump(out, f, indent=1)
        return
    skip = set(filter(None, args.skip.split(",")))
    if args.quick:
        args.runs, args.repeat, args.rtt_iters, args.generations = 1, 2, 300, 3
        skip.add("shape15m")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    os.environ["ZMIXD"] = os.path.abspath(os.path.join(args.build, "zmixd"))
    import conftest
    conftest.ZMIXD = os.environ["ZMIXD"]
    from conftest import make_examples, make_experts

    work = tempfile.mkdtemp(prefix="zmix-fleet-model-")
    experts = make_experts(work)
    k = len(experts)
    out = {"args": vars(args)}
    # The default search (sep-cma, docs/cem.md) scores 4 + floor(3 ln K) candidates a
    # generation, split by the daemon (src/adapt/session.c, zmix_session_split, with the
    # local pool's worker count) into pieces of ceil(P / (2 workers)): one chunk each.
    p = 4 + int(3 * math.log(k))
    split = daemon_split(p, args.workers)
    ex = make_examples(n=args.examples, prompt_len=args.prompt, target_len=args.target, seed=5)
    sizes = {"chunks_per_step": len(split),
             "chunk": len(chunk_message(1, 0, split[0], k, "zmix:examples:" + "0" * 64,
                                        {"model": {"fingerprint": "0" * 64},
                                         "experts_digest": "0" * 64}, random.Random(1))),
             "result": result_size(split[0]), "examples": len(examples_message(ex))}
    out["sizes"] = sizes
    print(f"job: {args.examples} examples of {args.prompt}+{args.target} tokens (a quarter held "
          f"out), {p} candidates a generation, --workers {args.workers}: chunks of {split} "
          f"candidates; message bytes {sizes}", flush=True)

    try:
        if "rtt" not in skip:
            print("rtt:", flush=True)
            out["rtt"] = measure_rtt(args, work, sizes)
            print("  " + json.dumps(out["rtt"]["median_us"]), flush=True)
        if "chunks" not in skip:
            print("chunks (one scorer thread, stories260K):", flush=True)
            # The job's search set (three quarters of its examples), and larger sets.
            search = args.examples - args.examples // 4
            configs = [(search, args.prompt, args.target), (48, 48, 4), (48, 96, 4)]
            ns = [1, 2, 4, 8, 16]
            if args.quick:
                configs, ns = configs[:1], [1, 4]
            out["chunks"] = measure_chunks(args, work, experts, configs, ns)
            out["per_candidate"] = per_candidate(out["chunks"])
            for w in out["per_candidate"]:
                print(f"  {w['examples']}x({w['prompt']}+{w['target']}): "
                      f"{w['per_candidate'] * 1e3:.2f} ms per candidate (median over sizes; "
                      f"{w['min'] * 1e3:.2f} to {w['max'] * 1e3:.2f}), "
                      f"{w['per_candidate'] / w['tokens'] * 1e6:.2f} us per candidate-token",
                      flush=True)
        if "shape15m" not in skip:
            print("the 15M shape (bench_score, random weights, one thread):", flush=True)
            out["shape15m"] = measure_shape15m(args)
        if "steps" not in skip:
            print("steps (daemon runs):", flush=True)
            out["steps"] = measure_steps(args, work, experts)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    if "rtt" in out:
        report(args, out)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)


def makespan(times, scorers):
    """When the last of these chunks ends, scorers taking them in order as each gets free."""
    free = [0.0] * scorers
    for t in times:
        k = free.index(min(free))
        free[k] += t
    return max(free)


def daemon_split(p, workers):
    """zmix_session_split (src/adapt/session.c) of p candidates with the local pool's workers."""
    size = max(1, -(-p // (2 * workers)))
    return [min(size, p - b) for b in range(0, p, size)]


def report(args, out):
    rtt = out["rtt"]
    rtts = [("loopback", None), ("0.2 ms", 0.2e-3), ("1 ms", 1e-3)]
    print("\nper-chunk costs (ms):")
    for name, x in rtts:
        c = per_chunk_costs(rtt, x)
        print(f"  {name:9s} scorer {c['scorer'] * 1e3:.3f}  driver publish {c['publish'] * 1e3:.3f}"
              f"  collect {c['collect'] * 1e3:.3f}  per step {c['step'] * 1e3:.3f}")
    # Workloads: chunk time proportional to candidates (per_candidate).
    workloads = []
    for w in out.get("per_candidate", []):
        workloads.append((f"stories260K {w['examples']}x({w['prompt']}+{w['target']})",
                          w["per_candidate"], w["tokens"]))
    if "shape15m" in out:
        v = statistics.median(q["seconds"] / q["candidates"] for q in out["shape15m"])
        workloads.append(("15M shape 16x(48+4)", v, 16 * 52))
    out["workloads"] = workloads
    print("\nchunk size for a per-chunk overhead under 5% (overhead = the scorer's round trips "
          "+ the driver's publish and collect):")
    out["five_percent"] = {}
    for name, x in rtts:
        c = per_chunk_costs(rtt, x)
        o = c["scorer"] + c["publish"] + c["collect"]
        t_min = o / 0.05
        out["five_percent"][name] = {"overhead_s": o, "chunk_s": t_min, "candidates": {}}
        line = f"  {name:9s} overhead {o * 1e3:.2f} ms -> chunks of at least {t_min * 1e3:.0f} ms:"
        for wname, tau, tok in workloads:
            n_min = math.ceil(t_min / tau)
            out["five_percent"][name]["candidates"][wname] = n_min
            line += f" {wname} {n_min} candidates ({t_min / (tau / tok):,.0f} candidate-tokens);"
        print(line)
    steps = out.get("steps")
    if not steps:
        return
    local = steps["local"]
    serial = statistics.median(r["serial"] for r in local)
    print("\nmeasured per generation (median of runs):")
    for kind, rs in steps.items():
        w = statistics.median(r["wall"] for r in rs)
        print(f"  {kind:6s} wall {w * 1e3:7.1f} ms  "
              f"scoring window {statistics.median(r['scoring'] for r in rs) * 1e3:7.1f} ms  "
              f"serial {statistics.median(r['serial'] for r in rs) * 1e3:5.1f} ms  "
              f"ratio to local in the same run {statistics.median(r['wall'] / l['wall'] for r, l in zip(rs, local)):.3f}")
    print("  same alpha everywhere:",
          len({tuple(r["alpha"]) for rs in steps.values() for r in rs}) == 1)
    # Validation: each fleet step predicted from the local run's serial part, the chunk
    # times that step's scorers logged (taken in order by the run's scorer threads), and the
    # loopback round trips; against the wall time per generation the client saw.
    costs = per_chunk_costs(rtt, None)
    out["validation"] = {}
    print("\nvalidation (per generation: median over runs of each run's median):")
    sizes = None
    for kind, members in (("fleet1", 1), ("fleet2", 2)):
        preds, meas, tcs, walls = [], [], [], []
        for r in steps[kind]:
            by_step = {}
            for member, seq, idx, n, sec in r["chunks"]:
                by_step.setdefault(seq, []).append((idx, n, sec))
            run_preds = []
            for q in sorted(by_step)[1:-1]:
                cs = [(n, sec) for _, n, sec in sorted(by_step[q])]
                sizes = [n for n, _ in cs]
                scorers = members * args.workers
                run_preds.append(costs["step"] + len(cs) * costs["publish"] + costs["collect"]
                                 + makespan([sec + costs["scorer"] for _, sec in cs], scorers))
                tcs += [sec / n for n, sec in cs]
            preds.append(statistics.median(run_preds))
            meas.append(r["scoring"])
            walls.append((serial + statistics.median(run_preds), r["wall"]))
        # Median over runs of each run's median generation, predicted and measured: first the
        # scoring window (what the stream is part of), then the whole generation with the
        # local runs' serial part added.
        pred, m = statistics.median(preds), statistics.median(meas)
        wp, wm = statistics.median(a for a, _ in walls), statistics.median(b for _, b in walls)
        out["validation"][kind] = {"predicted_window": pred, "measured_window": m,
                                   "predicted": wp, "measured": wm,
                                   "chunk_per_candidate": statistics.median(tcs),
                                   "per_run_window": list(zip(preds, meas)),
                                   "per_run": walls}
        print(f"  {kind}: scoring window predicted {pred * 1e3:.1f} ms, measured {m * 1e3:.1f} ms "
              f"(measured/predicted {m / pred:.2f}; per run "
              f"{min(b / a for a, b in zip(preds, meas)):.2f} to "
              f"{max(b / a for a, b in zip(preds, meas)):.2f}); whole generation predicted "
              f"{wp * 1e3:.1f} ms, measured {wm * 1e3:.1f} ms ({wm / wp:.2f}); chunks {sizes}, "
              f"{statistics.median(tcs) * 1e3:.1f} ms per candidate in the run")
    # The same from the local run alone: its generation plus what the stream adds (per step,
    # per chunk published and collected, and the scorer's round trips once per wave).
    n_chunks = len(sizes)
    for kind, members in (("fleet1", 1), ("fleet2", 2)):
        waves = -(-n_chunks // (members * args.workers))
        add = (costs["step"] + n_chunks * costs["publish"] + costs["collect"]
               + waves * costs["scorer"])
        ratios = [r["wall"] / l["wall"] for r, l in zip(steps[kind], local)]
        pr = statistics.median((l["wall"] + add) / l["wall"] for l in local)
        out["validation"][kind].update({"stream_adds": add, "predicted_ratio": pr,
                                        "measured_ratio": statistics.median(ratios),
                                        "measured_ratios": ratios})
        print(f"  {kind}: the stream adds {add * 1e3:.2f} ms a generation: predicted ratio to "
              f"local x{pr:.3f}, measured in the same runs x{statistics.median(ratios):.3f} "
              f"(runs: {', '.join(f'{x:.3f}' for x in ratios)})")
    p_seen = sum(sizes)
    out["generation"] = {"candidates": p_seen, "chunks": sizes}
    out["table"] = []
    # The generation the runs scored (sep-cma at K = 3), and 16 candidates (--method cem with
    # pop 16, or a larger dim: sep-cma's population grows with ln dim).
    for p in (p_seen, 16):
        table(args, out, rtts, serial, p)


def table(args, out, rtts, serial, p):
    today = daemon_split(p, args.workers)
    print(f"\nT(N) per generation of {p} candidates, model, N machines of {args.cores} cores "
          f"(ms; in brackets the speed-up against the local pool of one machine, and what the stream adds against the same chunks with free round trips); serial part "
          f"{serial * 1e3:.1f} ms; today's split {today}:")
    for wname, tau, _ in out["workloads"]:
        tc = lambda n, tau=tau: n * tau  # noqa: E731
        t_local = serial + makespan([tc(n) for n in today], args.cores)
        print(f"  {wname}: local pool {t_local * 1e3:.1f} ms")
        for name, x in rtts:
            c = per_chunk_costs(out["rtt"], x)
            # The smallest chunk whose round trips stay under 5% of its scoring.
            floor = math.ceil((c["scorer"] + c["publish"] + c["collect"]) / 0.05 / tau)
            for split in ("today", "per-scorer", "5% floor"):
                row, share = [], []
                for n_m in (1, 2, 4, 8, 16):
                    scorers = n_m * args.cores
                    if split == "today":
                        cs = today
                    else:
                        size = max(1, -(-p // scorers))
                        if split == "5% floor":
                            size = min(p, max(size, floor))
                        cs = [min(size, p - b) for b in range(0, p, size)]
                    t = (serial + c["step"] + len(cs) * c["publish"] + c["collect"]
                         + makespan([tc(n) + c["scorer"] for n in cs], scorers))
                    # What the stream adds, against the same split with free round trips.
                    t0 = serial + makespan([tc(n) for n in cs], scorers)
                    row.append(t)
                    share.append(t / t0 - 1)
                out["table"].append({"candidates": p, "workload": wname, "rtt": name,
                                     "split": split, "local": t_local, "T": row,
                                     "overhead": share})
                print(f"    {name:9s} {split:10s} " + "  ".join(
                    f"{t * 1e3:7.1f} ({t_local / t:4.2f}x, +{o * 100:3.1f}%)"
                    for t, o in zip(row, share)))


if __name__ == "__main__":
    main()
