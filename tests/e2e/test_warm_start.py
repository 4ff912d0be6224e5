"""Warm start through the daemon (docs/cem.md, "Warm start"; PROTOCOL.md §4.5 warm_start): a job
begins at a cached task's α, says so in its result, survives kill -9 with it, and is refused
for a task that is not cached or an α of the wrong shape."""

import json

import pytest

from conftest import Daemon, make_examples, wait_for
from zmix_client import RpcError

SMALL = {"method": "cem", "pop": 8, "iters": 3, "elite": 0.25, "std_tol": 0}


def submit(c, task, examples, cem, **extra):
    return c.call("submit", {"task": task, "examples": examples, "cem": cem, **extra})


def done(c, job):
    st = c.wait(job, timeout=120)["status"]
    assert st["state"] == "done", st
    return st


def document(c, task):
    return json.loads(c.get(task, vectors=False, document=True)["document"])


def test_warm_start_from_a_cached_task(tmp_path, experts):
    d = Daemon(str(tmp_path), experts).start()
    try:
        with d.client() as c:
            done(c, submit(c, "first", make_examples(n=4, seed=80), SMALL)["job"])
            alpha = c.get("first", vectors=False)["alpha"]
            job = submit(c, "second", make_examples(n=4, seed=81), SMALL, warm_start="first")["job"]
            done(c, job)
            doc = document(c, "second")
            assert doc["warm_start"]["from"] == "task first"
            assert doc["warm_start"]["alpha"] == pytest.approx(alpha, abs=1e-6)
            assert document(c, "first")["warm_start"] is None
            settings = c.get("second", vectors=False)["settings"]
            assert settings["warm_start"] == "first" and len(settings["warm_alpha"]) == len(alpha)
            # the status of the ended job shows the same settings (§4.6: every key of get's)
            assert c.status(job)["settings"] == settings

            # a warm start is part of the inputs: the same request cold is another job
            cold = submit(c, "second", make_examples(n=4, seed=81), SMALL)
            assert cold["cached"] is False
            done(c, cold["job"])
            again = submit(c, "third", make_examples(n=4, seed=81), SMALL, warm_start="first")
            done(c, again["job"])

            # a shared α starts a per-layer search on every matrix
            pl = submit(c, "layered", make_examples(n=4, seed=82), {**SMALL, "per_layer": True},
                        warm_start="first")["job"]
            done(c, pl)
            warm = document(c, "layered")["warm_start"]["alpha"]
            k = len(alpha)
            assert len(warm) > k and len(warm) % k == 0
            assert warm == pytest.approx(alpha * (len(warm) // k), abs=1e-6)

            # refusals, each naming the field
            for task, code, words in [("nosuch", "ENOTFOUND", "not cached"),
                                      ("bad/name", "EINVAL", "warm_start"),
                                      ("layered", "EINVAL", "per-layer α cannot start a shared")]:
                with pytest.raises(RpcError) as e:
                    submit(c, "x", make_examples(n=4, seed=83), SMALL, warm_start=task)
                assert e.value.code == code and words in e.value.message, e.value
    finally:
        assert d.stop() == 0, d.log_text()


def test_a_warm_started_job_resumes_after_kill_9_with_its_start(tmp_path, experts):
    d = Daemon(str(tmp_path), experts).start()
    ex = make_examples(n=16, prompt_len=48, target_len=4, seed=84)
    long = {"pop": 16, "iters": 12, "std_tol": 0, "target_accuracy": 2}
    with d.client() as c:
        done(c, submit(c, "seed-task", make_examples(n=4, seed=85), SMALL)["job"])
        alpha = c.get("seed-task", vectors=False)["alpha"]
        job = submit(c, "resumed", ex, long, warm_start="seed-task")["job"]
        wait_for(lambda: c.status(job)["generation"] >= 2, timeout=120)
    d.kill9()
    d.start()
    try:
        with d.client() as c:
            st = done(c, job)
            assert st["generation"] == st["max_generations"]  # the whole budget was spent
            doc = document(c, "resumed")
            assert doc["warm_start"]["alpha"] == pytest.approx(alpha, abs=1e-6)
            # the resumed job's result is the uninterrupted one: the same request is a hit
            assert submit(c, "resumed", ex, long, warm_start="seed-task")["cached"] is True
    finally:
        assert d.stop() == 0, d.log_text()
