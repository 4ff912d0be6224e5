"""Multiple choice through the daemon: a planted multiple-choice task (tests/adapt/plant_task:
choices are the model's own continuations under the hidden mix α*, the base model and each
expert, the answer the one α* prefers by a margin) submitted with the project's Python client
to a real zmixd, on stories260K and on the demo model; the result must recover it."""

import json
import os
import subprocess

import pytest

from conftest import MODEL_DIR, ZMIXD, Daemon
from zmix_client import RpcError

PLANT = os.environ.get("ZMIX_PLANT") or (
    os.path.join(os.path.dirname(ZMIXD), "tests", "adapt", "plant_task") if ZMIXD else "")
ZMIX = os.environ.get("ZMIX") or (os.path.join(os.path.dirname(ZMIXD), "zmix") if ZMIXD else "")
CEM = {"seed": 11, "iters": 30, "std_floor": 0.02, "std_tol": 0}


def model_for(which, tmp_path):
    if which == "stories260K":
        if not os.path.isdir(MODEL_DIR):
            pytest.skip(f"{MODEL_DIR} absent")
        return MODEL_DIR
    demo = str(tmp_path / "demo")
    subprocess.run([ZMIX, "demo-init", demo, "--examples", "4", "--heldout", "0"], check=True,
                   capture_output=True)
    return os.path.join(demo, "model")


@pytest.mark.parametrize("which", ["stories260K", "demo"])
def test_planted_choice_task_is_recovered(tmp_path, which):
    for path, what in ((ZMIXD, "ZMIXD"), (PLANT, "ZMIX_PLANT"), (ZMIX, "ZMIX")):
        if not path or not os.access(path, os.X_OK):
            pytest.skip(f"{what} (a built binary) not found")
    model = model_for(which, tmp_path)
    task_dir = tmp_path / "task"
    task_dir.mkdir()
    planted = json.loads(subprocess.run([PLANT, model, str(task_dir), "4", "2026"], check=True,
                                        capture_output=True, text=True).stdout)
    with open(task_dir / "ex.json") as f:
        examples = json.load(f)["examples"]
    assert len(examples) == 16 and all(len(e["choices"]) == 4 for e in examples)

    d = Daemon(str(tmp_path / "d"), planted["experts"], model=model).start()
    try:
        with d.client() as c:
            sub = c.submit("mc", examples, cem=CEM)
            r = c.wait(sub["job"], timeout=300)
            assert not r["timed_out"], r
            assert r["status"]["state"] == "done", r
            doc = json.loads(c.get("mc", vectors=False, document=True)["document"])
            # Ranked by choice accuracy, then the answer's margin; the base model, whose
            # preference is never the answer, gets none right.
            assert doc["settings"]["metric"] == "choice"
            assert doc["base"]["accuracy"] == 0.0
            assert doc["best"]["accuracy"] >= 0.9, doc["best"]
            assert doc["best"]["loglik"] > 0  # the mean margin: the answers win on average
            # The same examples again: the cached result. Another answer: another task.
            again = c.submit("mc", examples, cem=CEM)
            assert again["cached"]
            changed = [dict(e) for e in examples]
            changed[0]["answer"] = (changed[0]["answer"] + 1) % 4
            other = c.submit("mc", changed, cem=dict(CEM, iters=1))
            assert not other["cached"]
            c.wait(other["job"], timeout=120)

            # Refusals name the example and the field.
            mixed = examples[:1] + [{"prompt": examples[1]["prompt"],
                                     "target": examples[1]["choices"][0]}]
            with pytest.raises(RpcError) as e:
                c.submit("mixed", mixed)
            assert e.value.code == "EINVAL"
            assert "examples[1].target: examples[0] is multiple-choice" in e.value.message
            bad = [dict(examples[0], answer=4)]
            with pytest.raises(RpcError) as e:
                c.submit("bad", bad)
            assert "examples[0].answer must be the index of a choice" in e.value.message
            with pytest.raises(RpcError) as e:
                c.submit("exact", [{"prompt": [1, 2], "target": [3]}], cem={"metric": "choice"})
            assert "metric 'choice' scores multiple-choice examples" in e.value.message
            if which == "demo":  # a model with a tokenizer: choices as text run too
                text = [{"prompt": "the cat ", "choices": ["sat", "ran away", "is"], "answer": i}
                        for i in range(3)]
                job = c.submit("text", text, cem=dict(CEM, iters=1))["job"]
                st = c.wait(job, timeout=120)["status"]
                assert st["state"] == "done", st
                # Three examples with one prompt and one set of choices but each answer once:
                # whatever the mix prefers, exactly one is right (ties aside).
                assert st["best"]["accuracy"] <= 1 / 3 + 1e-9
        # A job cut by a shutdown (or finished just before it) is read back after the restart
        # with its choices and answers (job records keep them) and ends with the task solved.
        with d.client() as c:
            job = c.submit("mc-restart", examples, cem=dict(CEM, seed=12))["job"]
        assert d.stop() == 0, d.log_text()
        d.start()
        with d.client() as c:
            r = c.wait(job, timeout=300)
            assert r["status"]["state"] == "done", r
            doc = json.loads(c.get("mc-restart", vectors=False, document=True)["document"])
            assert doc["settings"]["metric"] == "choice"
            assert doc["best"]["accuracy"] >= 0.9, doc["best"]
    finally:
        assert d.stop() == 0, d.log_text()
