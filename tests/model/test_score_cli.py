"""`zmix generate` and `zmix score` on the real stories260K model, through the real binary.

Expert files are written here with a minimal safetensors writer (8-byte header length, JSON
header padded to 8 bytes, raw little-endian float32), so the test depends on nothing but the
format. Skips when the shared model directory is absent.
"""
import json
import math
import os
import random
import struct
import subprocess

import pytest

ZMIX = os.environ.get("ZMIX_BIN", "zmix")
SHARED = os.environ.get("ZMIX_SHARED_DIR", "")
MODEL_DIR = os.path.join(SHARED, "models", "stories260K")
MODEL_BIN = os.path.join(MODEL_DIR, "stories260K.bin")
KNOWN_1 = [461, 461, 401, 401, 401, 461, 378, 455, 473, 456, 435, 299, 362, 409, 283, 264, 283,
           452, 288, 13]
MLP = ["mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"]
NAMES = [f"model.layers.{l}.{m}.weight" for l in range(5) for m in MLP]
RANK = 64  # min(64, 172) for every MLP matrix of stories260K

pytestmark = pytest.mark.skipif(not os.path.isfile(MODEL_BIN), reason="stories260K not present")


def write_expert(path, z_by_name, name=None):
    header, blobs, offset = {}, [], 0
    for key in sorted(z_by_name):
        data = struct.pack(f"<{len(z_by_name[key])}f", *z_by_name[key])
        header[key] = {"dtype": "F32", "shape": [len(z_by_name[key])],
                       "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    if name:
        header["__metadata__"] = {"name": name}
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def run(*args):
    return subprocess.run([ZMIX, *map(str, args)], capture_output=True, text=True, timeout=120)


def ok(*args):
    r = run(*args)
    assert r.returncode == 0, r.stderr
    return r.stdout


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("score_cli")
    rng = random.Random(3)
    paths = {}
    write_expert(d / "ones_a.st", {n: [1.0] * RANK for n in NAMES})
    write_expert(d / "ones_b.st", {n: [1.0] * RANK for n in NAMES})
    write_expert(d / "math.st", {n: [1 + rng.gauss(0, 0.3) for _ in range(RANK)] for n in NAMES})
    write_expert(d / "code.st", {n: [1 + rng.gauss(0, 0.3) for _ in range(RANK)] for n in NAMES})
    ex = {"examples": [{"prompt": [1, 403, 407], "target": [405, 292, 303]},
                       {"prompt": [1], "target": [461, 461, 400]},
                       {"prompt": [1, 32, 300, 45], "target": [270, 511]}]}
    (d / "ex.json").write_text(json.dumps(ex))
    for p in ["ones_a", "ones_b", "math", "code"]:
        paths[p] = str(d / f"{p}.st")
    paths["ex"] = str(d / "ex.json")
    paths["dir"] = d
    return paths


@pytest.mark.parametrize("model", [MODEL_DIR, MODEL_BIN])
def test_generate_known_outputs(model):
    out = ok("generate", "--model", model, "--prompt", "1", "-n", 20)
    assert out == ",".join(map(str, KNOWN_1)) + "\n"


def test_generate_with_all_ones_experts_is_the_base_model(files):
    out = ok("generate", "--model", MODEL_BIN, "--prompt", "1", "-n", 20, "--experts",
             files["ones_a"] + "," + files["ones_b"], "--alpha", "0.7,0.9")
    assert out == ",".join(map(str, KNOWN_1)) + "\n"


def test_score_base_model_by_definition(files):
    res = json.loads(ok("score", "--model", MODEL_DIR, "--examples", files["ex"]))
    # Example 0's target is the model's own greedy continuation of its prompt: exact.
    assert res["examples"][0]["exact"] is True
    assert res["examples"][1]["exact"] is False  # 400 is not the greedy 401
    assert res["accuracy"] == pytest.approx(sum(e["exact"] for e in res["examples"]) / 3)
    assert res["loglik"] == pytest.approx(sum(e["loglik"] for e in res["examples"]) / 3)
    assert all(e["loglik"] < 0 for e in res["examples"])


def test_score_rescale_and_ones(files):
    base = json.loads(ok("score", "--model", MODEL_BIN, "--examples", files["ex"]))
    experts = files["ones_a"] + "," + files["ones_b"]
    mixed = json.loads(ok("score", "--model", MODEL_BIN, "--examples", files["ex"],
                          "--experts", experts, "--alpha", "2,2"))
    assert mixed["loglik"] == pytest.approx(base["loglik"], rel=1e-4)
    assert mixed["accuracy"] == base["accuracy"]
    plain = json.loads(ok("score", "--model", MODEL_BIN, "--examples", files["ex"],
                          "--experts", experts, "--alpha", "2,2", "--no-rescale"))
    assert abs(plain["loglik"] - base["loglik"]) > 1e-2  # W' = 4 W, not the base model
    norm = json.loads(ok("score", "--model", MODEL_BIN, "--examples", files["ex"],
                         "--experts", experts, "--alpha", "2,2", "--no-rescale", "--normalize"))
    assert norm["loglik"] == pytest.approx(base["loglik"], rel=1e-4)


def test_alpha_file_and_threads(files):
    experts = files["math"] + "," + files["code"]
    shared = ok("score", "--model", MODEL_DIR, "--examples", files["ex"], "--experts", experts,
                "--alpha", "0.25,0.5")
    per = files["dir"] / "alpha.json"
    per.write_text(json.dumps({"alpha": {n: [0.25, 0.5] for n in NAMES}}))
    by_file = ok("score", "--model", MODEL_DIR, "--examples", files["ex"], "--experts", experts,
                 "--alpha-file", per, "--threads", 2)
    a, b = json.loads(shared), json.loads(by_file)
    assert b["loglik"] == pytest.approx(a["loglik"], rel=1e-6)
    assert b["accuracy"] == a["accuracy"]
    flat = files["dir"] / "flat.json"
    flat.write_text(json.dumps({"alpha": [0.25, 0.5] * len(NAMES)}))
    c = json.loads(ok("score", "--model", MODEL_DIR, "--examples", files["ex"], "--experts",
                      experts, "--alpha-file", flat))
    assert c["loglik"] == pytest.approx(a["loglik"], rel=1e-6)
    # Layer 4's down_proj weighted differently: the score moves.
    changed = {n: [0.25, 0.5] for n in NAMES}
    changed[NAMES[-1]] = [2.0, 0.0]
    per.write_text(json.dumps({"alpha": changed}))
    d = json.loads(ok("score", "--model", MODEL_DIR, "--examples", files["ex"], "--experts",
                      experts, "--alpha-file", per))
    assert d["loglik"] != a["loglik"]
    one = ok("score", "--model", MODEL_DIR, "--examples", files["ex"], "--experts", experts,
             "--alpha", "0.25,0.5", "--threads", "1")
    assert one == shared


def test_attn_adapt_set(files):
    """--adapt attn: experts keyed by q/k/v/o (k and v are 32x64: rank 32)."""
    ranks = {"self_attn.q_proj": 64, "self_attn.k_proj": 32, "self_attn.v_proj": 32,
             "self_attn.o_proj": 64}
    names = {f"model.layers.{l}.{m}.weight": r for l in range(5) for m, r in ranks.items()}
    ones = files["dir"] / "attn_ones.st"
    write_expert(ones, {n: [1.0] * r for n, r in names.items()})
    rng = random.Random(5)
    other = files["dir"] / "attn_other.st"
    write_expert(other, {n: [1 + rng.gauss(0, 0.3) for _ in range(r)] for n, r in names.items()})
    base = json.loads(ok("score", "--model", MODEL_BIN, "--examples", files["ex"]))
    same = json.loads(ok("score", "--model", MODEL_BIN, "--examples", files["ex"], "--adapt",
                         "attn", "--experts", f"{ones},{other}", "--alpha", "1,0"))
    assert same["accuracy"] == base["accuracy"]  # z' = 1: the base model
    assert same["loglik"] == pytest.approx(base["loglik"], rel=1e-5)
    moved = json.loads(ok("score", "--model", MODEL_BIN, "--examples", files["ex"], "--adapt",
                          "attn", "--experts", f"{ones},{other}", "--alpha", "0,1"))
    assert moved["loglik"] != base["loglik"]
    # MLP experts do not fit the attn set: the expert loader names the problem.
    r = run("score", "--model", MODEL_BIN, "--examples", files["ex"], "--adapt", "attn",
            "--experts", files["math"], "--alpha", "1")
    assert r.returncode == 1 and "math" in r.stderr


@pytest.mark.parametrize("args,code,words", [
    (["score", "--model", MODEL_BIN], 2, "--examples"),
    (["score", "--model", MODEL_BIN, "--examples", "EX", "--experts", "MATH", "--alpha", "1,2"],
     2, "1 experts"),
    (["score", "--model", MODEL_BIN, "--examples", "EX", "--experts", "MATH"], 2, "--alpha"),
    (["score", "--model", MODEL_BIN, "--examples", "EX", "--threads", "0"], 2, "--threads"),
    (["score", "--model", MODEL_BIN, "--examples", "EX", "--adapt", "ffn"], 2, "ffn"),
    (["score", "--model", MODEL_BIN, "--examples", "/nonexistent.json"], 1, "nonexistent"),
    (["score", "--model", "/nonexistent", "--examples", "EX"], 1, "nonexistent"),
    (["score", "--model", MODEL_BIN, "--examples", "EX", "--experts", "TRUNC", "--alpha", "1"],
     1, "trunc"),
    (["score", "--model", MODEL_BIN, "--examples", "EX", "--experts", "MATH", "--alpha",
      "1,x"], 2, "1,x"),
    (["score", "--model", MODEL_BIN, "--examples", "EX", "--experts", "MATH", "--alpha-file",
      "SHORT"], 1, "model.layers"),
    (["generate", "--model", MODEL_BIN, "--prompt", "1,-3"], 2, "--prompt"),
    (["generate", "--model", MODEL_BIN, "--prompt", "1,512"], 1, "512"),
    (["generate", "--model", MODEL_BIN, "--prompt", "1", "-n", "600"], 1, "context length"),
    (["generate", "--frobnicate"], 2, "--frobnicate"),
])
def test_bad_arguments(files, args, code, words):
    trunc = files["dir"] / "trunc.st"
    trunc.write_bytes(open(files["math"], "rb").read()[:200])
    short = files["dir"] / "short.json"
    short.write_text(json.dumps({"alpha": {NAMES[0]: [1.0]}}))
    subst = {"EX": files["ex"], "MATH": files["math"], "TRUNC": str(trunc), "SHORT": str(short)}
    r = run(*[subst.get(a, a) for a in args])
    assert r.returncode == code, (r.stdout, r.stderr)
    assert r.stdout == ""
    lines = r.stderr.strip().split("\n")
    assert len(lines) == 1 and words in lines[0], r.stderr


def test_help():
    for cmd in ["generate", "score"]:
        r = run(cmd, "--help")
        assert r.returncode == 0 and r.stdout.startswith(f"usage: zmix {cmd}")
