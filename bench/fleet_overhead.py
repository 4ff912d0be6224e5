#!/usr/bin/env python3
"""The Redis stream's cost against the local pool, on one machine (docs/fleet.md, "Measured").

Runs the same job (stories260K, the e2e tests' experts, N examples of P + T tokens, pop 16)
three ways, each on fresh daemons and a fresh redis-server on a loopback port:
  local   one zmixd, no --store: the worker pool scores
  fleet1  one zmixd with --store redis://: the same scorers, every step through the stream
  fleet2  two zmixd on one Redis, each with --workers W: twice the scorers on the same cores
and prints the mean wall time per step (the search's generations and the baselines and
validation steps, from the job's elapsed wall time divided by its steps), the ratio to
local, and checks that all three give the same α.

    bench/fleet_overhead.py --build build [--workers 2] [--examples 16] [--prompt 48]
                            [--target 4] [--generations 8] [--repeat 3]

A measurement, not a test. On one machine fleet2 cannot be faster than local (the cores are
the same); it shows the cost of sharing, not the gain.
"""
import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--examples", type=int, default=16)
    ap.add_argument("--prompt", type=int, default=48)
    ap.add_argument("--target", type=int, default=4)
    ap.add_argument("--generations", type=int, default=8)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    os.environ["ZMIXD"] = os.path.abspath(os.path.join(args.build, "zmixd"))
    import conftest
    from conftest import Daemon, make_examples, make_experts
    from test_fleet import Redis
    conftest.ZMIXD = os.environ["ZMIXD"]

    work = tempfile.mkdtemp(prefix="zmix-fleet-bench-")
    experts = make_experts(work)
    ex = make_examples(n=args.examples, prompt_len=args.prompt, target_len=args.target, seed=5)
    cem = {"pop": 16, "iters": args.generations, "elite": 0.25, "std_tol": 0}
    steps = args.generations + 2  # the baselines and the validation step

    def run(kind, rep):
        d = os.path.join(work, f"{kind}-{rep}")
        extra = ("--workers", str(args.workers), "--log-level", "info")
        redis = Redis(d) if kind != "local" else None
        store = ("--store", redis.url) if redis else ()
        daemons = [Daemon(os.path.join(d, "a"), experts, extra=extra + store).start()]
        if kind == "fleet2":
            daemons.append(Daemon(os.path.join(d, "b"), experts, extra=extra + store).start())
        try:
            with daemons[0].client(timeout=600) as c:
                t0 = time.perf_counter()
                job = c.submit(f"bench{rep}", ex, cem=cem)["job"]
                st = c.wait(job, timeout=600)["status"]
                wall = time.perf_counter() - t0
                assert st["state"] == "done", st
                return wall / steps, st["best_alpha"]
        finally:
            for dm in daemons:
                dm.stop()
            if redis:
                redis.stop()

    results = {}
    for rep in range(args.repeat):
        for kind in ("local", "fleet1", "fleet2"):
            t, alpha = run(kind, rep)
            results.setdefault(kind, []).append((t, alpha))
    base = statistics.median(t for t, _ in results["local"])
    alphas = {tuple(a) for runs in results.values() for _, a in runs}
    print(f"{args.examples} examples of {args.prompt}+{args.target} tokens, pop 16, "
          f"{args.generations} generations, --workers {args.workers}, median of {args.repeat}")
    for kind, runs in results.items():
        t = statistics.median(x for x, _ in runs)
        print(f"  {kind:7s} {t * 1000:8.1f} ms per step   x{t / base:.3f}")
    print("  same alpha everywhere:", len(alphas) == 1)
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
