#!/usr/bin/python3
"""zmixd under load: status-request latency while every worker is scoring, and jobs per
second for small jobs. Starts its own daemon on stories260K (expert files written here).

    /usr/bin/python3 bench/bench_status_latency.py --zmixd build/zmixd [--runs 5] [--quick]

Per run: latency of `ping` on an idle daemon (the baseline, same run), then latency of
`status` while long jobs keep all workers busy (checked with `stats`), in slices that
alternate between no dashboard and a dashboard polling the daemon's HTTP listener (--http: a separate process fetching
what the dashboard page fetches, /api/stats, /api/jobs, /api/jobs/ID/history and
/api/tasks, plus /metrics, every --poll-ms; the page itself polls once a second), then N
tiny jobs submitted at once and the time until all are done. Prints each run and the medians over
runs; the machine is shared, so read the medians. Latencies are client round trips through
the Python client (an upper bound on the daemon's own time).
"""

import argparse
import json
import os
import signal
import statistics
import subprocess
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


# The dashboard's polling, in its own process so that it does not share the measuring
# client's interpreter lock. Prints its request count and median answer time on exit.
POLLER = r"""
import json, signal, statistics, sys, time, urllib.request
base, job, period = sys.argv[1], sys.argv[2], float(sys.argv[3])
paths = [p.replace("ID", job) for p in sys.argv[4].split(",")]
lat, stop = [], []
signal.signal(signal.SIGTERM, lambda *a: stop.append(1))
while not stop:
    t0 = time.perf_counter()
    for p in paths:
        t = time.perf_counter()
        with urllib.request.urlopen(base + p, timeout=30) as r:
            r.read()
        lat.append(time.perf_counter() - t)
    time.sleep(max(0.0, period - (time.perf_counter() - t0)))
print(json.dumps({"requests": len(lat), "median_ms": statistics.median(lat) * 1e3 if lat else 0}))
"""


DASHBOARD_PATHS = "/api/stats,/api/jobs?limit=50,/api/jobs/ID/history,/api/tasks,/metrics"
SLICES = 5  # per phase, alternating without and with the dashboard


def measure_status(c, jobs, n_status, seconds):
    """Back-to-back status requests: at least n_status, and for at least `seconds` (so that
    a phase with the dashboard spans many of its polls)."""
    busy_samples = []
    lat = []
    end = time.perf_counter() + seconds
    i = 0
    while i < n_status or time.perf_counter() < end:
        t = time.perf_counter()
        c.status(jobs[i % len(jobs)])
        lat.append(time.perf_counter() - t)
        if i % 100 == 0:
            busy_samples.append(c.stats()["workers"]["busy"])
        i += 1
    return lat, busy_samples


def one_run(d, n_status, n_small, workers, run, poll_s, poll_paths, seconds):
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
        # The dashboard's poller runs throughout and is paused (SIGSTOP) in the slices
        # without it: slices alternate, so both see the same jobs at the same age.
        poller = subprocess.Popen([sys.executable, "-c", POLLER, d.http, str(long_jobs[0]),
                                   str(poll_s), poll_paths], stdout=subprocess.PIPE, text=True)
        time.sleep(0.5)
        lat, dash_lat, busy_samples = [], [], []
        for k in range(2 * SLICES):
            with_dash = k % 2 == 1
            poller.send_signal(signal.SIGCONT if with_dash else signal.SIGSTOP)
            got, busy = measure_status(c, long_jobs, n_status // SLICES, seconds / SLICES)
            (dash_lat if with_dash else lat).extend(got)
            busy_samples += busy
        poller.send_signal(signal.SIGCONT)
        poller.terminate()
        polled = json.loads(poller.communicate(timeout=60)[0])
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
        "busy_status_requests": len(lat),
        "busy_status_median_ms": statistics.median(lat) * 1e3,
        "busy_status_p99_ms": percentile(lat, 0.99) * 1e3,
        "busy_status_max_ms": max(lat) * 1e3,
        "dash_status_requests": len(dash_lat),
        "dash_status_median_ms": statistics.median(dash_lat) * 1e3,
        "dash_status_p99_ms": percentile(dash_lat, 0.99) * 1e3,
        "dash_status_max_ms": max(dash_lat) * 1e3,
        "dash_http_requests": polled["requests"],
        "dash_http_median_ms": polled["median_ms"],
        "workers_busy_min": min(busy_samples),
        "small_jobs_per_s": n_small / small_s,
    }


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--zmixd", required=True)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--poll-ms", type=float, default=100,
                    help="the dashboard's polling period (the page polls every 1000 ms)")
    ap.add_argument("--poll-paths", default=DASHBOARD_PATHS,
                    help="what the dashboard fetches each period (ID: the first long job); "
                         "/app.js alone is answered by the HTTP thread without the loop")
    ap.add_argument("--seconds", type=float, default=5,
                    help="least duration of each status phase (without, with the dashboard)")
    ap.add_argument("--quick", action="store_true", help="one short run (a smoke test)")
    args = ap.parse_args()
    if not os.path.isdir(conftest.MODEL_DIR):
        print(f"bench_status_latency: {conftest.MODEL_DIR} absent, nothing to measure")
        return 0
    conftest.ZMIXD = os.path.abspath(args.zmixd)
    runs, n_status, n_small = (1, 200, 10) if args.quick else (args.runs, 5000, 100)
    seconds = 0.5 if args.quick else args.seconds
    with tempfile.TemporaryDirectory(prefix="zmix-bench-") as tmp:
        experts = conftest.make_experts(tmp)
        port = conftest.free_port()
        d = conftest.Daemon(os.path.join(tmp, "d"), experts,
                            extra=["--workers", str(args.workers), "--log-level", "warn",
                                   "--max-jobs", "1000", "--http", f"127.0.0.1:{port}"])
        d.http = f"http://127.0.0.1:{port}"
        d.args = [a for a in d.args]  # keep the fixture's defaults, then our overrides win
        d.start()
        try:
            results = []
            for r in range(runs):
                res = one_run(d, n_status, n_small, args.workers, r, args.poll_ms / 1000,
                              args.poll_paths, seconds)
                results.append(res)
                print(f"run {r}: " + ", ".join(f"{k} {v:.3f}" for k, v in res.items()), flush=True)
        finally:
            rc = d.stop()
    print(f"medians over {runs} runs ({args.workers} workers, {n_status} status requests per run "
          f"and {seconds:g} s at least, without and with a dashboard polling every "
          f"{args.poll_ms:g} ms, {n_small} small "
          f"jobs):")
    for k in results[0]:
        print(f"  {k:24s} {statistics.median(r[k] for r in results):.3f}")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
