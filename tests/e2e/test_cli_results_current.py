"""Results that no longer match (issue 12): after a restart with the experts in another order,
or with another model, a cached result keeps the names of the experts that made it, get,
tasks and the CLI say plainly that it is not current, `zmix get --out` refuses it unless
--force, and a new submit recomputes."""

import os

from cli_fixtures import requires_cli, zmix
from conftest import MODEL_DIR, Daemon, make_examples

pytestmark = requires_cli

SMALL = {"pop": 8, "iters": 2, "elite": 0.25, "std_tol": 0}


def submit_done(d, task, ex):
    with d.client() as c:
        job = c.submit(task, ex, cem=SMALL)["job"]
        assert c.wait(job, timeout=60)["status"]["state"] == "done"


def restart(d, experts=None, model=None):
    assert d.stop() == 0, d.log_text()
    i = d.args.index("--experts")
    if experts is not None:
        d.args[i + 1] = ",".join(experts)
    if model is not None:
        d.args[d.args.index("--model") + 1] = model
    return d.start()


def test_reordered_experts_make_a_result_not_current(tmp_path, experts):
    d = Daemon(str(tmp_path), experts).start()
    ex = make_examples(n=2, seed=40)
    try:
        submit_done(d, "mixed", ex)
        with d.client() as c:
            before = c.get("mixed", vectors=False)
        assert before["current"] is True and before["mismatch"] == ""
        assert [e["expert"] for e in before["expert_scores"]] == before["experts"]
        assert len(before["experts"]) == len(experts)

        restart(d, experts=list(reversed(experts)))
        with d.client() as c:
            after = c.get("mixed", vectors=False)
            listed = {t["task"]: t for t in c.tasks()}
        assert after["current"] is False
        assert "another expert set" in after["mismatch"], after["mismatch"]
        # the stored scores keep the names of the experts that made them
        assert [e["expert"] for e in after["expert_scores"]] == before["experts"]
        assert after["experts"] == before["experts"]
        assert listed["mixed"]["current"] is False and listed["mixed"]["mismatch"]

        r = zmix(d, "get", "mixed")
        assert r.rc == 0 and "NOT CURRENT: made with another expert set" in r.out, r
        r = zmix(d, "tasks")
        assert r.rc == 0 and "NOT CURRENT" in r.out, r
        out = tmp_path / "z.safetensors"
        r = zmix(d, "get", "mixed", "--out", str(out))
        assert r.rc == 1 and "not writing" in r.err and "--force" in r.err, r
        assert not out.exists()
        r = zmix(d, "get", "mixed", "--out", str(out), "--force")
        assert r.rc == 0 and out.exists(), r

        # a new submit of the same task and examples recomputes for the current experts
        with d.client() as c:
            again = c.submit("mixed", ex, cem=SMALL)
            assert again["cached"] is False
            assert c.wait(again["job"], timeout=60)["status"]["state"] == "done"
            now = c.get("mixed", vectors=False)
        assert now["current"] is True and now["experts"] == list(reversed(before["experts"]))
    finally:
        d.stop()


def test_another_model_makes_a_result_not_current(tmp_path, experts):
    d = Daemon(str(tmp_path), experts).start()
    try:
        submit_done(d, "m", make_examples(n=2, seed=41))
        restart(d, model=os.path.join(MODEL_DIR, "stories260K.bin"))
        with d.client() as c:
            got = c.get("m", vectors=False)
            info = c.info()
        assert got["current"] is False and "another model" in got["mismatch"], got["mismatch"]
        assert got["model_fingerprint"] != info["model"]["fingerprint"]
        r = zmix(d, "get", "m", "--out", str(tmp_path / "z.safetensors"))
        assert r.rc == 1 and "made for another model" in r.err, r
    finally:
        d.stop()
