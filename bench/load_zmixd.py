#!/usr/bin/python3
"""Load generator for zmixd: many connections on loopback mixing submit, status, wait, cancel,
get, jobs and ping, with a fixed request count and a time bound; every response is checked.
Alongside, hostile clients that must not hold anybody up: "stallers" send half a frame and
go silent, "hogs" send requests and never read the answers. Ends with a summary (requests,
errors, latency percentiles, jobs completed) and exits non-zero on any error.

  load_zmixd.py --zmixd build/zmixd [--connections 200] [--requests 20000] [--duration 120]
  load_zmixd.py --address unix:/path.sock ...     (a daemon you started yourself)

Run with Debian's /usr/bin/python3 (python3-msgpack). One thread per connection: the latency
includes Python's scheduling, so it is an upper bound of the daemon's own.
"""

import argparse
import json
import multiprocessing
import os
import queue
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE_DIR, "clients", "python"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "e2e"))

import msgpack  # noqa: E402
from zmix_client import Client, RpcError  # noqa: E402

# Small, cheap jobs so that many of them finish during the run; distinct seeds make distinct
# cache keys, a few repeated ones exercise cache hits and coalescing.
CEM = {"pop": 8, "iters": 2, "std_tol": 0}
RETAINED_FINISHED = 1000  # finished jobs zmixd keeps for status (src/daemon/jobs.c)


def percentile(sorted_values, p):
    if not sorted_values:
        return float("nan")
    k = min(len(sorted_values) - 1, max(0, int(round(p / 100.0 * (len(sorted_values) - 1)))))
    return sorted_values[k]


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.latency = {}  # method -> [seconds]
        self.errors = []   # descriptions of unexpected outcomes
        self.requests = 0
        self.expected_errors = 0  # e.g. ELIMIT on a full queue: answered correctly
        self.jobs_submitted = set()
        self.jobs_done = set()
        self.jobs_cancelled = set()
        self.forgotten = set()  # finished, then dropped by the daemon's retention
        self.max_job_id = 0
        self.cache_hits = 0

    def record(self, method, seconds):
        with self.lock:
            self.requests += 1
            self.latency.setdefault(method, []).append(seconds)

    def error(self, what):
        with self.lock:
            self.errors.append(what)


def error_kinds(errors):
    """Errors grouped by their text with numbers and connection ids blanked."""
    kinds = {}
    for e in errors:
        k = re.sub(r"\d+", "N", e)
        kinds[k] = kinds.get(k, 0) + 1
    return dict(sorted(kinds.items(), key=lambda kv: -kv[1])[:10])


def probe_main(address):
    """Somebody else entirely, in a process of its own (not behind the load threads' GIL): one
    ping every 100 ms on its own connection until stdin closes; prints the latencies (ms)."""
    import select
    out = []
    with Client(address, timeout=30) as c:
        while not select.select([sys.stdin], [], [], 0.1)[0]:
            t = time.perf_counter()
            c.ping()
            out.append((time.perf_counter() - t) * 1e3)
    print(json.dumps(out))


def prober(address, stop, out):
    proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--probe", address],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    stop.wait()
    res, _ = proc.communicate("", timeout=60)
    out.extend(json.loads(res or "[]"))


def check(cond, what):
    if not cond:
        raise AssertionError(what)


def examples_for(rng, vocab=512):
    return [{"prompt": [1] + [rng.randrange(3, vocab) for _ in range(rng.randrange(3, 10))],
             "target": [rng.randrange(3, vocab) for _ in range(rng.randrange(1, 3))]}
            for _ in range(rng.randrange(1, 4))]


def worker(address, idx, stats, budget, deadline, n_tasks, ops_done):
    """One connection: a random mix of methods until the shared budget or the time is out."""
    rng = random.Random(idx * 7919 + 1)
    my_jobs = []
    try:
        c = Client(address, timeout=60)
    except OSError as e:
        stats.error(f"conn {idx}: connect failed: {e}")
        return
    with c:
        while time.time() < deadline:
            with budget["lock"]:
                if budget["left"] <= 0:
                    break
                budget["left"] -= 1
            op = rng.choices(["submit", "status", "wait", "cancel", "get", "jobs", "ping"],
                             weights=[20, 35, 10, 5, 15, 5, 10])[0]
            t = time.perf_counter()
            job = None
            try:
                if op == "submit":
                    task = f"load-{rng.randrange(n_tasks)}"
                    seed = rng.randrange(4)  # few seeds per task: hits and coalescing
                    ex_rng = random.Random(hash((task, seed)) & 0xFFFFFFFF)
                    r = c.submit(task, examples_for(ex_rng), cem=dict(CEM, seed=seed),
                                 priority=rng.randrange(-2, 3))
                    check(r["task"] == task and isinstance(r["job"], int), f"submit: {r}")
                    if r["cached"]:
                        check("result" in r and len(r["result"]["alpha"]) == 3, f"hit: {r}")
                        with stats.lock:
                            stats.cache_hits += 1
                    else:
                        check(r["state"] in ("queued", "running"), f"submit: {r}")
                        my_jobs.append(r["job"])
                        with stats.lock:
                            stats.jobs_submitted.add(r["job"])
                            stats.max_job_id = max(stats.max_job_id, r["job"])
                elif op == "status" and my_jobs:
                    job = rng.choice(my_jobs)
                    r = c.status(job)
                    check(r["job"] == job and r["state"] in
                          ("queued", "running", "done", "failed", "cancelled"), f"status: {r}")
                    check(r["state"] != "failed", f"job {job} failed: {r.get('reason')}")
                    if r["state"] == "done":
                        with stats.lock:
                            stats.jobs_done.add(job)
                    if r["state"] in ("done", "cancelled"):
                        my_jobs.remove(job)  # poll what is still running
                elif op == "wait" and my_jobs:
                    job = rng.choice(my_jobs)
                    r = c.wait(job, timeout=rng.choice([0.0, 0.05, 0.5]))
                    st = r["status"]
                    check(st["job"] == job, f"wait: {r}")
                    check(r["timed_out"] or st["state"] in ("done", "cancelled"), f"wait: {r}")
                    if st["state"] == "done":
                        with stats.lock:
                            stats.jobs_done.add(job)
                    if st["state"] in ("done", "cancelled"):
                        my_jobs.remove(job)
                elif op == "cancel" and my_jobs:
                    job = my_jobs.pop(rng.randrange(len(my_jobs)))
                    try:
                        r = c.cancel(job)
                        check(r["job"] == job and r["state"] == "cancelled", f"cancel: {r}")
                        # The answer comes once the job is cancelled on disk. A job already
                        # writing its end state answers ESTATE instead.
                        with stats.lock:
                            stats.jobs_cancelled.add(job)
                    except RpcError as e:
                        if e.code != "ESTATE":  # ESTATE: it had already finished
                            raise
                        with stats.lock:
                            stats.expected_errors += 1
                elif op == "get":
                    task = f"load-{rng.randrange(n_tasks)}"
                    try:
                        r = c.get(task)
                        check(r["task"] == task and len(r["alpha"]) == 3, f"get: {r.keys()}")
                        check(all(len(v) > 0 for v in r["z"].values()), "get: empty z")
                    except RpcError as e:
                        check(e.code == "ENOTFOUND", f"get: {e}")
                        with stats.lock:
                            stats.expected_errors += 1
                elif op == "jobs":
                    r = c.jobs()
                    check(isinstance(r, list), "jobs")
                else:
                    op = "ping"
                    check(c.ping()["pong"] is True, "ping")
            except RpcError as e:
                if op == "submit" and e.code == "ELIMIT":  # queue full: a correct answer
                    with stats.lock:
                        stats.expected_errors += 1
                elif (job is not None and e.code == "ENOTFOUND"
                      and stats.max_job_id - job > RETAINED_FINISHED):
                    # Finished, and forgotten since: the daemon keeps the last 1000
                    # finished jobs, and over a thousand newer ones exist.
                    with stats.lock:
                        stats.expected_errors += 1
                        stats.forgotten.add(job)
                    if job in my_jobs:
                        my_jobs.remove(job)
                else:
                    stats.error(f"conn {idx}: {op}: {e.code}: {e}")
            except (AssertionError, OSError, ConnectionError) as e:
                stats.error(f"conn {idx}: {op}: {e!r}")
                return
            stats.record(op, time.perf_counter() - t)
            with ops_done.get_lock():
                ops_done.value += 1


def staller(path, stop, out):
    """Sends the first half of a request, then nothing: the daemon must drop it at the idle
    timeout and serve everybody else meanwhile."""
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(path)
        frame = msgpack.packb([0, 1, "ping", {}])
        s.sendall(frame[: len(frame) // 2])
        s.settimeout(0.2)
        while not stop.is_set():
            try:
                if s.recv(4096) == b"":
                    out.append("closed")
                    return
            except socket.timeout:
                continue
            except OSError:
                out.append("closed")
                return
        out.append("open")
    finally:
        s.close()


def hog(path, stop, out):
    """Sends requests as fast as it can and never reads: backpressure must stop it alone."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(path)
    s.setblocking(False)
    req = msgpack.packb([0, 1, "info", {}]) * 64
    sent = 0
    try:
        while not stop.is_set():
            try:
                sent += s.send(req)
            except BlockingIOError:
                time.sleep(0.01)
            except OSError:
                out.append(("closed", sent))
                return
        out.append(("open", sent))
    finally:
        s.close()


def run_part(address, conn_ids, requests, deadline, n_tasks, ops_done, results):
    """One process's share of the connections (threads) and of the request budget."""
    stats = Stats()
    budget = {"left": requests, "lock": threading.Lock()}
    threads = [threading.Thread(target=worker, daemon=True,
                                args=(address, i, stats, budget, deadline, n_tasks, ops_done))
               for i in conn_ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    results.put({k: v for k, v in vars(stats).items() if k != "lock"})


def run(address, connections, requests, duration, stallers=4, hogs=2, n_tasks=24,
        progress=True, idle_timeout_s=None, processes=None):
    """idle_timeout_s: the daemon's idle timeout, when known: then stalled and never-reading
    clients must have been closed by the daemon within twice that time."""
    stats = Stats()
    ctx = multiprocessing.get_context("fork")
    ops_done = ctx.Value("l", 0)
    # Client threads of one Python process share its interpreter lock: with hundreds of
    # them, their own scheduling would dominate the latencies. Spread them over processes.
    if processes is None:
        processes = max(1, min(8, (connections + 99) // 100))
    deadline = time.time() + duration
    stop = threading.Event()
    bad_out, hog_out = [], []
    path = address[len("unix:"):] if address.startswith("unix:") else None
    if not path:
        stallers = hogs = 0
    side = []
    if path:
        side += [threading.Thread(target=staller, args=(path, stop, bad_out), daemon=True)
                 for _ in range(stallers)]
        side += [threading.Thread(target=hog, args=(path, stop, hog_out), daemon=True)
                 for _ in range(hogs)]
    probe_ms = []
    probe_stop = threading.Event()
    side.append(threading.Thread(target=prober, args=(address, probe_stop, probe_ms),
                                 daemon=True))
    for t in side:
        t.start()
    t0 = time.time()
    results = ctx.Queue()
    procs = []
    for p in range(processes):
        ids = list(range(p, connections, processes))
        share = requests // processes + (1 if p < requests % processes else 0)
        procs.append(ctx.Process(target=run_part, daemon=True,
                                 args=(address, ids, share, deadline, n_tasks, ops_done, results)))
    for p in procs:
        p.start()
    last = 0
    parts = []
    while len(parts) < len(procs):
        try:
            parts.append(results.get(timeout=0.5))
        except queue.Empty:
            if not any(p.is_alive() for p in procs):
                stats.error("a load process died without a result")
                break
        if progress and time.time() - last > 5:
            last = time.time()
            print(f"  {time.time() - t0:6.1f} s  {ops_done.value} requests", file=sys.stderr)
    for p in procs:
        p.join(10)
    for part in parts:
        stats.requests += part["requests"]
        stats.errors += part["errors"]
        stats.expected_errors += part["expected_errors"]
        stats.cache_hits += part["cache_hits"]
        stats.max_job_id = max(stats.max_job_id, part["max_job_id"])
        for m, v in part["latency"].items():
            stats.latency.setdefault(m, []).extend(v)
        for name in ("jobs_submitted", "jobs_done", "jobs_cancelled", "forgotten"):
            getattr(stats, name).update(part[name])
    elapsed = time.time() - t0
    probe_stop.set()
    side[-1].join(60)

    forgotten = stats.forgotten
    # Every job this run submitted must end (done or cancelled, never failed or lost).
    with Client(address, timeout=120) as c:
        for job in sorted(stats.jobs_submitted):
            try:
                r = c.wait(job, timeout=max(1.0, deadline + 60 - time.time()))
            except RpcError as e:
                # The daemon keeps the last 1000 finished jobs: older ones may be forgotten,
                # but only in a run that finished more than that.
                if e.code == "ENOTFOUND" and len(stats.jobs_submitted) > RETAINED_FINISHED:
                    forgotten.add(job)
                else:
                    stats.error(f"final wait of job {job}: {e.code}: {e}")
                continue
            st = r["status"]
            if r["timed_out"]:
                stats.error(f"job {job} did not finish: {st['state']}")
            elif st["state"] == "done":
                if job in stats.jobs_cancelled:
                    stats.error(f"job {job}: cancel was acknowledged, then it ended done")
                stats.jobs_done.add(job)
            elif st["state"] == "cancelled":
                stats.jobs_cancelled.add(job)
            else:
                stats.error(f"job {job} ended {st['state']}: {st.get('reason')}")
        server_stats = c.stats()
    # The stalled clients must have been cut off by the idle timeout (and the hogs by
    # backpressure or the idle timeout) by now or soon: give them twice the timeout.
    if idle_timeout_s is not None:
        limit = time.time() + 2 * idle_timeout_s + 2
        while time.time() < limit and (len(bad_out) < stallers or len(hog_out) < hogs):
            time.sleep(0.1)
    stop.set()
    for t in side:
        t.join(5)
    if idle_timeout_s is not None:
        if bad_out.count("closed") != stallers:
            stats.error(f"stalled clients not closed: {bad_out}")
        if [s for s, _ in hog_out].count("closed") != hogs:
            stats.error(f"clients that never read not closed: {hog_out}")
    both = stats.jobs_done & stats.jobs_cancelled
    if both:
        stats.error(f"jobs seen both done and cancelled: {sorted(both)[:10]}")
    lost = stats.jobs_submitted - stats.jobs_done - stats.jobs_cancelled - forgotten
    if lost:
        stats.error(f"jobs neither done nor cancelled: {sorted(lost)[:10]}")

    # Long polls (wait) last as long as asked by design: not part of the overall latency.
    lat = sorted(x for m, v in stats.latency.items() if m != "wait" for x in v)
    summary = {
        "connections": connections,
        "client_processes": processes,
        "requests": stats.requests,
        "errors": len(stats.errors),
        "expected_error_answers": stats.expected_errors,
        "elapsed_s": round(elapsed, 2),
        "requests_per_s": round(stats.requests / elapsed, 1) if elapsed else 0,
        "latency_ms_except_wait": {"p50": round(percentile(lat, 50) * 1e3, 3),
                       "p90": round(percentile(lat, 90) * 1e3, 3),
                       "p99": round(percentile(lat, 99) * 1e3, 3),
                       "max": round(lat[-1] * 1e3, 3) if lat else None},
        "latency_p99_ms_by_method": {m: round(percentile(sorted(v), 99) * 1e3, 3)
                                     for m, v in sorted(stats.latency.items())},
        "jobs_submitted": len(stats.jobs_submitted),
        "jobs_done": len(stats.jobs_done),
        "jobs_cancelled": len(stats.jobs_cancelled),
        "jobs_finished_then_forgotten_by_retention": len(forgotten),
        "cache_hits": stats.cache_hits,
        "stallers": {"closed_by_daemon": bad_out.count("closed"), "still_open": bad_out.count("open")},
        "hogs": [{"state": s, "bytes_sent": n} for s, n in hog_out],
        "daemon_connections_at_end": server_stats.get("connections"),
        "first_errors": stats.errors[:10],
        "error_kinds": error_kinds(stats.errors),
        "jobs_seen_finished": len(stats.jobs_done | stats.jobs_cancelled),
        "probe_ping_ms": {"n": len(probe_ms),
                          "p50": round(percentile(sorted(probe_ms), 50), 3),
                          "p99": round(percentile(sorted(probe_ms), 99), 3)},
    }
    return summary


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--probe":
        probe_main(sys.argv[2])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--zmixd", help="start this zmixd on stories260K (else --address)")
    ap.add_argument("--address", help="unix:/path or tcp:host:port of a running daemon")
    ap.add_argument("--connections", type=int, default=200)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--duration", type=float, default=120.0, help="seconds, upper bound")
    ap.add_argument("--stallers", type=int, default=4)
    ap.add_argument("--hogs", type=int, default=2)
    ap.add_argument("--idle-timeout-ms", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print the summary as JSON only")
    args = ap.parse_args()
    if bool(args.zmixd) == bool(args.address):
        ap.error("give exactly one of --zmixd and --address")

    daemon = None
    if args.zmixd:
        import conftest  # the e2e fixtures: Daemon, expert files
        if not os.path.isdir(conftest.MODEL_DIR):
            print(f"load: {conftest.MODEL_DIR} absent; nothing to do", file=sys.stderr)
            return 0
        work = tempfile.mkdtemp(prefix="zmix-load-")
        conftest.ZMIXD = args.zmixd
        daemon = conftest.Daemon(work, conftest.make_experts(work),
                                 extra=["--workers", str(args.workers),
                                        "--idle-timeout-ms", str(args.idle_timeout_ms),
                                        "--write-queue-limit", "1M",
                                        "--max-connections", str(args.connections + 64),
                                        "--log-level", "info"])
        daemon.args[0] = args.zmixd
        daemon.start()
        address = daemon.address
    else:
        address = args.address
    try:
        summary = run(address, args.connections, args.requests, args.duration,
                      stallers=args.stallers, hogs=args.hogs, progress=not args.json,
                      idle_timeout_s=args.idle_timeout_ms / 1000.0 if daemon else None)
    finally:
        if daemon:
            rc = daemon.stop()
            if rc != 0:
                print("zmixd exited with", rc, daemon.log_text(), file=sys.stderr)
                return 1
    print(json.dumps(summary, indent=1))
    return 0 if summary["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
