#!/usr/bin/python3
"""zmixd under load: status-request latency while every worker is scoring, and jobs per
second for small jobs. Starts its own daemon on stories260K (expert files written here).

    /usr/bin/python3 bench/bench_status_latency.py --zmixd build/zmixd [--runs 5] [--quick]

Per run: latency of `ping` on an idle daemon (the baseline, same run), then latency of
`status` while long jobs keep all workers busy (checked with `stats`), then N tiny jobs
submitted at once and the time until all are done. Prints each run and the medians over
runs; the machine is shared, so read the medians. Latencies are client round trips through
the Python client (an upper bound on the daemon's own time).
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests", "e2e"))
os.environ.setdefault("ZMIX_SOURCE_DIR", os.path.join(HERE, ".."))

import conftest  # noqa: E402  (Daemon, make_experts, make_examples)


def percentile(xs, q):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(q * len(xs)))]


def timed_calls(fn, n):
    lat = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        lat.append(time.perf_counter() - t)
    return lat


def one_run(d, n_status, n_small, workers, run):
    with d.client() as c:
        idle = timed_calls(c.ping, n_status)
        # Saturate: more long jobs than workers, each with plenty of chunks.
        ex = conftest.make_examples(n=16, prompt_len=48, target_len=4, seed=100 + run)
        long_jobs = [c.submit(f"load{run}_{i}", ex, cem={"pop": 64, "iters": 1000, "std_tol": 0,
                                                         "seed": i})["job"]
                     for i in range(workers + 1)]
        deadline = time.time() + 30
        while c.stats()["workers"]["busy"] < workers and time.time() < deadline:
            time.sleep(0.01)
        busy_samples = []
        lat = []
        for i in range(n_status):
            t = time.perf_counter()
            c.status(long_jobs[i % len(long_jobs)])
            lat.append(time.perf_counter() - t)
            if i % 100 == 0:
                busy_samples.append(c.stats()["workers"]["busy"])
        for j in long_jobs:
            c.cancel(j)
        for j in long_jobs:
            c.wait(j, timeout=30)
        # Small jobs: one example, tiny population, submitted together.
        small_ex = conftest.make_examples(n=1, prompt_len=8, target_len=2, seed=7)
        t = time.perf_counter()
        ids = [c.submit(f"small{run}_{i}", small_ex, cem={"pop": 4, "iters": 2, "seed": i})["job"]
               for i in range(n_small)]
        for j in ids:
            st = c.wait(j, timeout=60)["status"]
            assert st["state"] == "done", st
        small_s = time.perf_counter() - t
    return {
        "idle_ping_median_ms": statistics.median(idle) * 1e3,
        "busy_status_median_ms": statistics.median(lat) * 1e3,
        "busy_status_p99_ms": percentile(lat, 0.99) * 1e3,
        "busy_status_max_ms": max(lat) * 1e3,
        "workers_busy_min": min(busy_samples),
        "small_jobs_per_s": n_small / small_s,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zmixd", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="one short run (a smoke test)")
    args = ap.parse_args()
    if not os.path.isdir(conftest.MODEL_DIR):
        print(f"bench_status_latency: {conftest.MODEL_DIR} absent, nothing to measure")
        return 0
    conftest.ZMIXD = os.path.abspath(args.zmixd)
    runs, n_status, n_small = (1, 200, 10) if args.quick else (args.runs, 5000, 100)
    with tempfile.TemporaryDirectory(prefix="zmix-bench-") as tmp:
        experts = conftest.make_experts(tmp)
        d = conftest.Daemon(os.path.join(tmp, "d"), experts,
                            extra=["--workers", str(args.workers), "--log-level", "warn",
                                   "--max-jobs", "1000"])
        d.args = [a for a in d.args]  # keep the fixture's defaults, then our overrides win
        d.start()
        try:
            results = []
            for r in range(runs):
                res = one_run(d, n_status, n_small, args.workers, r)
                results.append(res)
                print(f"run {r}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True)
        finally:
            rc = d.stop()
    print(f"medians over {runs} runs ({args.workers} workers, {n_status} status requests per run, "
          f"{n_small} small jobs):")
    for k in results[0]:
        print(f"  {k:24s} {statistics.median(r[k] for r in results):.3f}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
