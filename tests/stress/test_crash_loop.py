"""kill -9 zmixd at random moments, over and over, while jobs run and results are written; after
every restart, every result a client ever saw reported done is served intact (α and z′ bit for
bit, through `get` and in the task's safetensors file), every acknowledged job still exists
and eventually finishes, and no record is ever found torn.

ZMIX_CRASH_ITERS sets the number of kills (CI: 20; docs/reliability.md: a long run)."""

import json
import os
import random
import signal
import struct
import time

from zmix_e2e_fixtures import Daemon, make_examples

ITERS = int(os.environ.get("ZMIX_CRASH_ITERS", "20"))
SEED = int(os.environ.get("ZMIX_CRASH_SEED", "2026"))


def f32_bytes(values):
    return struct.pack("<%df" % len(values), *values)


def snapshot(result):
    """What must survive: α and z′ as exact float32 bytes, and the job that made them."""
    return {"job": result["job"], "key": result.get("key"),
            "alpha": f32_bytes(result["alpha"]),
            "z": {name: f32_bytes(v) for name, v in sorted(result["z"].items())}}


def read_safetensors(path):
    """The task's z′ file, parsed and length-checked: name -> float32 bytes."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    out = {}
    for name, t in header.items():
        if name == "__metadata__":
            continue
        begin, end = t["data_offsets"]
        assert t["dtype"] == "F32" and 0 <= begin <= end <= len(data), (path, name, t)
        out[name] = data[begin:end]
    return out


def verify_seen(c, cache_dir, seen):
    for task, snap in seen.items():
        r = c.get(task)
        got = snapshot(r)
        assert got["alpha"] == snap["alpha"], f"{task}: alpha changed after a crash"
        assert got["z"] == snap["z"], f"{task}: z' changed after a crash"
        st = read_safetensors(os.path.join(cache_dir, "tasks", task + ".safetensors"))
        assert st == snap["z"], f"{task}: safetensors file differs from the served z'"


def test_kill9_loop_loses_nothing(tmp_path, experts):
    d = Daemon(str(tmp_path), experts, extra=["--log-level", "info"])
    try:
        crash_loop(d)
    finally:
        if d.proc is not None and d.proc.poll() is None:  # a failed check: no daemon left
            d.proc.kill()
            d.proc.wait()


def crash_loop(d):
    rng = random.Random(SEED)
    seen = {}       # task -> snapshot of the result a client saw done
    acked = {}      # job id -> task, for every submit the daemon acknowledged
    finished = set()
    kills = kills_mid_job = 0
    for it in range(ITERS):
        d.start()
        with d.client() as c:
            verify_seen(c, d.cache_dir, seen)
            # Every acknowledged job is known after the crash (durable before the ack).
            for job in acked:
                st = c.status(job)
                assert st["state"] != "failed", st
            tasks = []
            # Kills that come too early leave jobs unfinished; submit only while the backlog
            # is small, so a long loop never runs into the queue limit.
            n_new = rng.randrange(2, 5) if c.stats()["queue"]["unfinished"] < 16 else 0
            for k in range(n_new):
                task = f"crash-{it}-{k}"
                # Sizes spread over ~0.05-1 s of scoring, so kills land in every phase.
                cem = {"pop": 16, "iters": rng.randrange(2, 9), "std_tol": 0, "seed": it}
                ex = make_examples(n=rng.randrange(2, 12), prompt_len=rng.randrange(8, 40),
                                   seed=1000 * it + k)
                r = c.submit(task, ex, cem=cem)
                acked[r["job"]] = task
                tasks.append(task)
            if seen and rng.random() < 0.5:
                # Rewrite an existing result's files (identical inputs: identical bytes)
                # while the kill may land.
                old = rng.choice(sorted(seen))
                r = c.get(old, vectors=False)
                assert r["task"] == old
            # Watch for a random while, recording every result reported done.
            until = time.time() + rng.choice([0.0, rng.uniform(0.0, 0.6), rng.uniform(0.0, 1.5)])
            while time.time() < until:
                pending = [j for j in acked if j not in finished]
                if not pending:
                    time.sleep(0.005)  # the kill may still hit the cache's last writes
                    continue
                job = rng.choice(pending)
                w = c.wait(job, timeout=0.02)
                if w["status"]["state"] == "done":
                    task = acked[job]
                    snap = snapshot(c.get(task))
                    if snap["job"] == job:
                        seen[task] = snap
                    finished.add(job)
                elif w["status"]["state"] in ("failed", "cancelled"):
                    raise AssertionError(f"job {job}: {w['status']}")
        d.proc.send_signal(signal.SIGKILL)
        d.proc.wait()
        kills += 1
        kills_mid_job += any(j not in finished for j in acked)
        d.stop()

    seen_before_kill = len(seen)
    # Last restart: everything acknowledged finishes, everything seen is intact; then one
    # more kill, and every result (now all seen done) must come back bit for bit.
    d.start()
    with d.client() as c:
        verify_seen(c, d.cache_dir, seen)
        for job, task in acked.items():
            w = c.wait(job, timeout=300)
            assert not w["timed_out"] and w["status"]["state"] == "done", w
            r = c.get(task)
            assert r["job"] == job
            seen[task] = snapshot(r)
        for t in c.tasks():
            c.get(t["task"])  # every listed result is whole
    d.proc.send_signal(signal.SIGKILL)
    d.proc.wait()
    d.stop()
    d.start()
    try:
        with d.client() as c:
            verify_seen(c, d.cache_dir, seen)
            assert sorted(t["task"] for t in c.tasks()) == sorted(seen)
    finally:
        assert d.stop() == 0
    with open(d.log, errors="replace") as f:
        full_log = f.read()
    # Crash-safe writes: a kill never leaves a record the loader has to reject.
    assert "skipped:" not in full_log, [l for l in full_log.splitlines() if "skipped:" in l][:5]
    print(f"crash loop: {kills} kills ({kills_mid_job} with jobs unfinished), {len(acked)} "
          f"jobs acknowledged and finished, {seen_before_kill} results seen done before a "
          f"kill, {len(seen)} results verified intact")
    assert kills == ITERS and kills_mid_job > 0
