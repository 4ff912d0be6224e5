"""`zmix generate` through the real binary, on the demo model (zmix demo-init) and stories260K.

- With the task's adaptation (a `zmix adapt` whose search reached accuracy 1.0), greedy
  generation from each example's prompt reproduces its target, text in and text out; the base
  model does not.
- The KV cache gives the ids of the cache-free path (--no-cache): greedy on stories260K (both
  formats) and on the demo, sampled on the demo, with the base model and under z'. (Sampled
  ids are the same unless a draw lands within float rounding of the boundary between two ids:
  the two paths run their GEMMs over different numbers of rows, and OpenBLAS's result for a
  row depends on that, so their logits differ in the last bits.)
- Seeded sampling is reproducible and seeds differ; stop ids end the generation.
- A result made for another base model, a truncated result file, --text on a model without a
  tokenizer and bad numbers are refused with a message saying what was wrong.
"""
import json
import os

import pytest

# The same runner as zmix score's tests, beside this file.
from test_score_cli import ok, run

SHARED = os.environ.get("ZMIX_SHARED_DIR", "")
STORIES = os.path.join(SHARED, "models", "stories260K")
EXPERTS = ["red", "green", "blue", "gold"]


def generate_json(*args):
    return json.loads(ok("generate", "--json", *args))


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("generate_demo")
    ok("demo-init", d / "demo")
    root = d / "demo"
    experts = ",".join(str(root / "experts" / f"{e}.safetensors") for e in EXPERTS)
    # The demo's search with a fixed seed: it reaches accuracy 1.0 on the task.
    ok("adapt", "--model", root / "model", "--experts", experts, "--examples",
       root / "task.json", "--normalize", "--seed", 0, "--threads", 2, "--validation", 0,
       "--out", d / "result.json", "--z-out", d / "z.safetensors")
    result = json.loads((d / "result.json").read_text())
    return {"root": root, "model": root / "model", "z": d / "z.safetensors",
            "result_doc": d / "result.json", "experts": experts, "result": result,
            "task": json.loads((root / "task.json").read_text())["examples"], "dir": d}


def test_adapted_greedy_reproduces_targets(demo):
    assert demo["result"]["best"]["accuracy"] == 1.0  # else the check below proves nothing
    base_hits = 0
    for ex in demo["task"]:
        n = len(ex["target"])  # the byte tokenizer: one id per character
        adapted = generate_json("--model", demo["model"], "--z", demo["z"], "--text",
                                ex["prompt"], "-n", n, "--ignore-eos")
        assert adapted["text"] == ex["target"], ex
        assert adapted["finish_reason"] == "length"
        # Plain text output is the same text.
        out = ok("generate", "--model", demo["model"], "--z", demo["z"], "--text", ex["prompt"],
                 "-n", n, "--ignore-eos")
        assert out == ex["target"] + "\n"
        base = generate_json("--model", demo["model"], "--text", ex["prompt"], "-n", n,
                             "--ignore-eos")
        base_hits += base["text"] == ex["target"]
    assert base_hits < len(demo["task"]) / 2  # the adaptation is what makes the difference


def test_result_document_with_experts_is_the_same_adaptation(demo):
    ex = demo["task"][0]
    via_z = generate_json("--model", demo["model"], "--z", demo["z"], "--text", ex["prompt"],
                          "-n", 8)
    via_doc = generate_json("--model", demo["model"], "--z", demo["result_doc"], "--experts",
                            demo["experts"], "--text", ex["prompt"], "-n", 8)
    assert via_doc == via_z
    r = run("generate", "--model", demo["model"], "--z", demo["result_doc"], "--text", "x")
    assert r.returncode == 1 and "--experts" in r.stderr


@pytest.mark.parametrize("sampling", [[], ["--temperature", "0.9", "--seed", "5"],
                                      ["--temperature", "1.3", "--top-p", "0.8", "--seed", "9"]])
def test_cache_matches_reference_demo(demo, sampling):
    for ex in demo["task"][:4]:
        for adapt in ([], ["--z", demo["z"]]):
            args = ["--model", demo["model"], *adapt, "--text", ex["prompt"], "-n", 40,
                    "--ignore-eos", *sampling]
            assert generate_json(*args) == generate_json(*args, "--no-cache")


@pytest.mark.skipif(not os.path.isdir(STORIES), reason="stories260K not present")
@pytest.mark.parametrize("model", [STORIES, os.path.join(STORIES, "stories260K.bin")])
def test_cache_matches_reference_stories(model):
    for prompt in ["1", "1,403,407", "1,32,300,45,270,511,3,99"]:
        args = ["--model", model, "--prompt", prompt, "-n", 200, "--ignore-eos"]
        assert generate_json(*args) == generate_json(*args, "--no-cache")


def test_sampling_seeded_and_stop(demo):
    args = ["--model", demo["model"], "--z", demo["z"], "--text", "grain ", "-n", 40,
            "--ignore-eos", "--temperature", "1.5"]
    a = generate_json(*args, "--seed", 1)
    assert a["finish_reason"] == "length" and a["stop_token"] is None  # null, as the daemon
    assert generate_json(*args, "--seed", 1) == a
    assert generate_json(*args, "--seed", 2)["tokens"] != a["tokens"]
    # Stopping at the 6th id: the 5 before it, and the stop id named.
    stop = a["tokens"][5]
    first = a["tokens"].index(stop)
    s = generate_json(*args, "--seed", 1, "--stop", f"{stop}")
    assert s["tokens"] == a["tokens"][:first]
    assert s["finish_reason"] == "stop" and s["stop_token"] == stop


def test_refusals(demo, tmp_path):
    # A result made for another base model.
    if os.path.isdir(STORIES):
        r = run("generate", "--model", STORIES, "--z", demo["z"], "--prompt", "1")
        assert r.returncode == 1 and "another base model" in r.stderr
        r = run("generate", "--model", STORIES, "--text", "hello")
        assert r.returncode == 1 and "tokenizer" in r.stderr
    # Truncated and corrupt result files.
    data = demo["z"].read_bytes()
    (tmp_path / "trunc.st").write_bytes(data[: len(data) // 2])
    r = run("generate", "--model", demo["model"], "--z", tmp_path / "trunc.st", "--prompt", "1")
    assert r.returncode == 1 and "trunc.st" in r.stderr
    flipped = bytearray(data)
    flipped[-3] ^= 0x40
    (tmp_path / "flip.st").write_bytes(bytes(flipped))
    r = run("generate", "--model", demo["model"], "--z", tmp_path / "flip.st", "--prompt", "1")
    assert r.returncode == 1 and "flip.st" in r.stderr
    for args, word in [(["--temperature", "-1"], "--temperature"), (["--top-p", "0"], "--top-p"),
                       (["--seed", "x"], "--seed"), (["-n", "0"], "-n"),
                       (["--stop", "1,x"], "--stop")]:
        r = run("generate", "--model", demo["model"], "--prompt", "1", *args)
        assert r.returncode == 2 and word in r.stderr, (args, r.stderr)
    r = run("generate", "--model", demo["model"], "--prompt", "1", "--stop", "999")
    assert r.returncode == 1 and "stop[0] is 999" in r.stderr
    r = run("score", "--model", demo["model"], "--examples", "x.json", "--temperature", "1")
    assert r.returncode == 2 and "belongs to 'zmix generate'" in r.stderr
