#!/usr/bin/env python3
"""What an adaptation costs per model size: time per generation and peak memory of zmixd,
for shared and per-layer α (docs/sizing.md).

For each shape, writes a random-weight BF16 model in the Hugging Face layout (LLaMA family;
the weights' values do not change the cost), three experts for its MLP matrices and a
few-shot set of N examples of P prompt + T target tokens; starts zmixd on it (a fresh cache
directory: the first start factors the matrices), then runs one job with shared α and one
with per-layer α (pop 32, 2 generations each), and reads from zmixd's log the time of each
job's first generation (zmixd logs it, "first generation took ...") and from /proc its peak
RSS. Prints one line per shape and kind of α.

    bench/sizing.py --build build [--shapes 15m,135m,1b] [--workers 2] [--examples 10]
                    [--prompt 96] [--target 8]

A measurement, not a test: the 1B shape writes a 2.5 GB model and factors 48 matrices of
2048 x 8192 (minutes on 2 cores).
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import memory_plan_rss as mp  # noqa: E402

SHAPES = {
    # dim, hidden, layers, heads, kv heads, vocab
    "15m": (288, 768, 6, 6, 6, 32000),        # stories15M
    "135m": (576, 1536, 30, 9, 3, 49152),     # SmolLM2-135M
    "1b": (2048, 8192, 16, 32, 8, 128256),    # Llama-3.2-1B
}


def job_timing(log_text, job):
    m = re.search(rf"job {job}: first generation took ([\d.]+) s", log_text)
    return float(m.group(1)) if m else float("nan")


def run_shape(build, name, workers, n_ex, prompt, target, root, pop, kinds):
    mp.SCALES[name] = SHAPES[name]
    c = mp.config_for("llama31", name)
    work = os.path.join(root, name)
    shutil.rmtree(work, ignore_errors=True)
    model = os.path.join(work, "model")
    mp.write_model(model, c)
    experts = mp.write_experts(work, c)
    rng = np.random.default_rng(7)
    ex = [{"prompt": [int(t) for t in rng.integers(3, c["vocab_size"], prompt)],
           "target": [int(t) for t in rng.integers(3, c["vocab_size"], target)]}
          for _ in range(n_ex)]
    examples = os.path.join(work, "ex.json")
    json.dump({"examples": ex}, open(examples, "w"))
    log = os.path.join(work, "zmixd.log")
    p, sock, env, ready_s = mp.start_daemon(build, model, experts, work, workers, log)
    hwm_ready = mp.status(p.pid, "VmHWM")
    rows = []
    for kind, extra in (("shared", []), ("per-layer", ["--per-layer"])):
        if kind not in kinds:
            continue
        r = subprocess.run([os.path.join(build, "zmix"), "submit", f"size-{kind}", "--examples",
                            examples, "--pop", str(pop), "--iters", "2", "--recompute", "--json",
                            "--socket", sock, *extra], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            sys.exit(f"zmix submit: {r.stdout}{r.stderr}")
        job = json.loads(r.stdout)["job"]
        r = subprocess.run([os.path.join(build, "zmix"), "wait", str(job), "--timeout", "3600",
                            "--socket", sock], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            sys.exit(f"zmix wait: {r.stdout}{r.stderr}")
        rows.append((kind, job_timing(open(log).read(), job), mp.status(p.pid, "VmHWM")))
    p.terminate()
    p.wait(timeout=120)
    plan = re.search(r"memory plan: .*", open(log).read()).group(0)
    size = os.path.getsize(os.path.join(model, "model.safetensors"))
    shutil.rmtree(work, ignore_errors=True)
    return dict(ready_s=ready_s, hwm_ready=hwm_ready, rows=rows, plan=plan, size=size)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--shapes", default="15m,135m")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--examples", type=int, default=10)
    ap.add_argument("--prompt", type=int, default=96)
    ap.add_argument("--target", type=int, default=8)
    ap.add_argument("--pop", type=int, default=32,
                    help="population of the measured jobs (time per generation grows with it)")
    ap.add_argument("--kinds", default="shared,per-layer")
    a = ap.parse_args()
    root = tempfile.mkdtemp(prefix="zmix-sizing-")
    try:
        print(f"workload: {a.examples} examples x ({a.prompt} prompt + {a.target} target) tokens,"
              f" pop {a.pop}, K = 3 experts, {a.workers} workers, BF16 weights; load average "
              f"{os.getloadavg()[0]:.1f} at the start")
        for name in a.shapes.split(","):
            m = run_shape(a.build, name, a.workers, a.examples, a.prompt, a.target, root, a.pop,
                          a.kinds.split(","))
            print(f"== {name}: model {m['size'] / 2**20:.0f} MiB, ready (factoring included) in "
                  f"{m['ready_s']:.1f} s, VmHWM at ready {m['hwm_ready'] / 2**20:.0f} MiB")
            print(f"   {m['plan']}")
            for kind, s, hwm in m["rows"]:
                print(f"   {kind:9s} α: {s:.3f} s per generation of {a.pop} ({a.pop / s:.2f} "
                      f"candidates/s; pop 32: {32 * s / a.pop:.2f} s, 50 generations "
                      f"~ {50 * 32 * s / a.pop / 60:.1f} min); VmHWM {hwm / 2**20:.0f} MiB")
            print(f"   load average {os.getloadavg()[0]:.1f} at the end")
            sys.stdout.flush()
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
