"""`zmix export` checked from outside: an independent numpy reader of the PEFT adapter.

The reader knows nothing of zmix. It reads adapter_config.json and adapter_model.safetensors
by PEFT's rules alone (key names base_model.model.<module>.lora_A/B.weight, shapes [r, in]
and [out, r], r and lora_alpha per module from rank_pattern / alpha_pattern matched as PEFT
matches them, scaling lora_alpha / r), adds scaling * B @ A to the base model's weights, and
runs its own LLaMA forward pass (Hugging Face layout: rotate-half RoPE, grouped-query
attention, SwiGLU, RMSNorm). Checked on the demo model and on stories260K:

  - the numpy forward itself reproduces stories260K's known greedy continuation;
  - with the full-rank adapter the logits match those of zmix's W' (the merged directory
    zmix wrote) to float rounding, and the accuracy and log-likelihood are the ones zmix
    reports for the exact W'; `zmix generate` on the merged directory and numpy greedy
    decoding with the adapter give the same ids;
  - with --rank auto the accuracy is the exact W''s, the log-likelihood within the tolerance;
  - a result for another base model and corrupt result files are refused by the command.
"""
import json
import math
import os
import random
import re
import struct
import subprocess

import numpy as np
import pytest

ZMIX = os.environ.get("ZMIX_BIN", "zmix")
SHARED = os.environ.get("ZMIX_SHARED_DIR", "")
STORIES = os.path.join(SHARED, "models", "stories260K")
KNOWN_1 = [461, 461, 401, 401, 401, 461, 378, 455]


def run(*args, check=True):
    r = subprocess.run([ZMIX, *map(str, args)], capture_output=True, text=True, timeout=300)
    if check:
        assert r.returncode == 0, r.stderr
    return r


# ---- safetensors and the model, by the formats' own rules -------------------------------------

def read_safetensors(path):
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n])
    data = raw[8 + n:]
    meta = header.pop("__metadata__", {})
    out = {}
    for name, t in header.items():
        b, e = t["data_offsets"]
        buf = data[b:e]
        if t["dtype"] == "F32":
            a = np.frombuffer(buf, dtype="<f4")
        elif t["dtype"] == "BF16":
            a = (np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        elif t["dtype"] == "F16":
            a = np.frombuffer(buf, dtype="<f2").astype(np.float32)
        else:
            raise ValueError(f"{path}: dtype {t['dtype']}")
        out[name] = a.reshape(t["shape"]).astype(np.float64)
    return out, meta


def load_model(model_dir):
    cfg = json.load(open(os.path.join(model_dir, "config.json")))
    weights, _ = read_safetensors(os.path.join(model_dir, "model.safetensors"))
    return cfg, weights


def forward(cfg, w, tokens):
    """Logits [len(tokens), vocab] of a Hugging Face LLaMA, in float64."""
    dim, n_heads = cfg["hidden_size"], cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads", n_heads)
    hd = cfg.get("head_dim", dim // n_heads)
    eps, theta = cfg.get("rms_norm_eps", 1e-6), cfg.get("rope_theta", 10000.0)
    T = len(tokens)

    def rms(x, g):
        return g * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)

    inv = theta ** (-np.arange(0, hd, 2) / hd)
    ang = np.arange(T)[:, None] * inv[None, :]
    cos, sin = np.cos(ang), np.sin(ang)

    def rope(x):  # x [T, heads, hd], rotate-half pairs (i, i + hd/2)
        a, b = x[..., : hd // 2], x[..., hd // 2:]
        c, s = cos[:, None, :], sin[:, None, :]
        return np.concatenate([a * c - b * s, a * s + b * c], axis=-1)

    x = w["model.embed_tokens.weight"][tokens]
    mask = np.triu(np.full((T, T), -np.inf), 1)
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rms(x, w[p + "input_layernorm.weight"])
        q = rope((h @ w[p + "self_attn.q_proj.weight"].T).reshape(T, n_heads, hd))
        k = rope((h @ w[p + "self_attn.k_proj.weight"].T).reshape(T, n_kv, hd))
        v = (h @ w[p + "self_attn.v_proj.weight"].T).reshape(T, n_kv, hd)
        rep = n_heads // n_kv
        k, v = np.repeat(k, rep, axis=1), np.repeat(v, rep, axis=1)
        att = np.einsum("thd,shd->hts", q, k) / math.sqrt(hd) + mask
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        o = np.einsum("hts,shd->thd", att, v).reshape(T, n_heads * hd)
        x = x + o @ w[p + "self_attn.o_proj.weight"].T
        h = rms(x, w[p + "post_attention_layernorm.weight"])
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rms(x, w["model.norm.weight"])
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    if cfg.get("tie_word_embeddings"):
        head = w["model.embed_tokens.weight"]
    return x @ head.T


def greedy(cfg, w, prompt, n):
    seq = list(prompt)
    for _ in range(n):
        seq.append(int(np.argmax(forward(cfg, w, seq)[-1])))
    return seq[len(prompt):]


def scores(cfg, w, examples):
    """Accuracy (every target token the argmax) and mean over examples of the mean target
    log-probability: the definitions of the task score."""
    exact, ll = 0, 0.0
    for e in examples:
        toks = e["prompt"] + e["target"][:-1]
        lg = forward(cfg, w, toks)[len(e["prompt"]) - 1:]
        lp = lg - lg.max(-1, keepdims=True)
        lp = lp - np.log(np.exp(lp).sum(-1, keepdims=True))
        exact += all(int(np.argmax(lg[t])) == y for t, y in enumerate(e["target"]))
        ll += np.mean([lp[t, y] for t, y in enumerate(e["target"])])
    return exact / len(examples), ll / len(examples)


# ---- PEFT's rules ---------------------------------------------------------------------------

def pattern_value(patterns, module, default):
    """PEFT's lookup: a pattern key matches a module name as a regular expression anchored at
    the end, after an optional dotted prefix."""
    for key, value in patterns.items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def apply_peft(weights, adapter_dir):
    cfg = json.load(open(os.path.join(adapter_dir, "adapter_config.json")))
    tensors, _ = read_safetensors(os.path.join(adapter_dir, "adapter_model.safetensors"))
    assert cfg["peft_type"] == "LORA" and not cfg.get("fan_in_fan_out")
    assert cfg.get("bias", "none") == "none" and not cfg.get("use_dora")
    targets = cfg["target_modules"]
    w = dict(weights)
    modules = {k[len("base_model.model."):-len(".lora_A.weight")]
               for k in tensors if k.endswith(".lora_A.weight")}
    assert modules and all(k.startswith("base_model.model.") for k in tensors)
    for module in sorted(modules):
        assert module.split(".")[-1] in targets, module
        r = pattern_value(cfg.get("rank_pattern") or {}, module, cfg["r"])
        alpha = pattern_value(cfg.get("alpha_pattern") or {}, module, cfg["lora_alpha"])
        scaling = alpha / math.sqrt(r) if cfg.get("use_rslora") else alpha / r
        A = tensors[f"base_model.model.{module}.lora_A.weight"]
        B = tensors[f"base_model.model.{module}.lora_B.weight"]
        W = w[module + ".weight"]
        assert A.shape == (r, W.shape[1]) and B.shape == (W.shape[0], r), module
        w[module + ".weight"] = W + scaling * (B @ A)
    return w, cfg


# ---- fixtures: a real search on each model ------------------------------------------------

def write_expert(path, z_by_name):
    header, blobs, off = {}, [], 0
    for key in sorted(z_by_name):
        data = struct.pack(f"<{len(z_by_name[key])}f", *z_by_name[key])
        header[key] = {"dtype": "F32", "shape": [len(z_by_name[key])],
                       "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def stories_setup(d):
    cfg = json.load(open(os.path.join(STORIES, "config.json")))
    rank = min(cfg["hidden_size"], cfg["intermediate_size"])
    names = [f"model.layers.{l}.mlp.{m}.weight" for l in range(cfg["num_hidden_layers"])
             for m in ("gate_proj", "up_proj", "down_proj")]
    rng = random.Random(11)
    experts = []
    for k in range(3):
        p = d / f"expert_{k}.st"
        write_expert(p, {n: [math.exp(rng.gauss(0, 0.15)) for _ in range(rank)] for n in names})
        experts.append(str(p))
    # Targets: the greedy continuation under a hidden mix, so the search has something to find.
    examples = []
    for i in range(8):
        prompt = [1] + [rng.randrange(3, cfg["vocab_size"]) for _ in range(3)]
        out = run("generate", "--model", STORIES, "--prompt", ",".join(map(str, prompt)), "-n", 3,
                  "--experts", ",".join(experts), "--alpha", "0.6,0.3,0.1").stdout
        examples.append({"prompt": prompt, "target": [int(t) for t in out.strip().split(",")]})
    ex = d / "ex.json"
    ex.write_text(json.dumps({"examples": examples}))
    return STORIES, experts, str(ex)


def demo_setup(d):
    run("demo-init", d / "demo")
    man = json.load(open(d / "demo" / "demo.json"))
    experts = [str(d / "demo" / e) for e in man["experts"]]
    return str(d / "demo" / "model"), experts, str(d / "demo" / "task.tokens.json")


@pytest.fixture(scope="module", params=["demo", "stories260K"])
def case(request, tmp_path_factory):
    if request.param == "stories260K" and not os.path.isfile(os.path.join(STORIES, "config.json")):
        pytest.skip("stories260K not present")
    d = tmp_path_factory.mktemp(request.param)
    model, experts, ex = (demo_setup if request.param == "demo" else stories_setup)(d)
    run("adapt", "--model", model, "--experts", ",".join(experts), "--examples", ex,
        "--pop", 8, "--iters", 6, "--seed", 3, "--quiet", "--out", d / "r.json",
        "--z-out", d / "z.safetensors")

    def export(name, *args):
        out = d / name
        r = run("export", "--model", model, "--result", d / "z.safetensors", "--out", out,
                "--examples", ex, "--json", *args)
        return out, json.loads(r.stdout)

    cfg, base = load_model(model)
    examples = json.load(open(ex))["examples"]
    return {"dir": d, "model": model, "ex": ex, "examples": examples, "cfg": cfg, "base": base,
            "export": export, "experts": experts}


# ---- the checks ----------------------------------------------------------------------------

@pytest.mark.skipif(not os.path.isfile(os.path.join(STORIES, "config.json")),
                    reason="stories260K not present")
def test_numpy_forward_reproduces_the_known_continuation():
    cfg, w = load_model(STORIES)
    assert greedy(cfg, w, [1], len(KNOWN_1)) == KNOWN_1


def test_full_rank_adapter_is_zmix_w_prime(case):
    peft_dir, report = case["export"]("peft-full", "--format", "peft", "--rank", "full")
    merged_dir, merged_report = case["export"]("merged", "--format", "merged")
    cfg, base = case["cfg"], case["base"]
    adapted, acfg = apply_peft(base, peft_dir)
    assert acfg["lora_alpha"] / acfg["r"] == 1.0
    _, merged = load_model(merged_dir)
    worst, scale = 0.0, 0.0
    for e in case["examples"]:
        toks = e["prompt"] + e["target"]
        a, m = forward(cfg, adapted, toks), forward(cfg, merged, toks)
        worst = max(worst, float(np.abs(a - m).max()))
        scale = max(scale, float(np.abs(m).max()))
    print(f"full-rank adapter vs zmix's W': max |logit diff| {worst:.3g} (logits up to {scale:.3g})")
    assert worst < 1e-4 * max(scale, 1.0)
    # The adapter scores what zmix says the exact W' scores.
    acc, ll = scores(cfg, adapted, case["examples"])
    exact = report["scores"]["exact"]
    print(f"numpy with adapter: acc {acc:.4f} loglik {ll:.6f}; zmix exact W': {exact}")
    assert acc == exact["accuracy"]
    assert abs(ll - exact["loglik"]) < 1e-4
    assert merged_report["scores"]["export"]["accuracy"] == exact["accuracy"]
    # And it differs from the base model: the adaptation is really in the adapter.
    base_acc, base_ll = scores(cfg, base, case["examples"])
    assert abs(base_ll - ll) > 1e-3
    # zmix generating from the merged directory and numpy decoding with the adapter agree.
    for e in case["examples"][:2]:
        ids = run("generate", "--model", merged_dir, "--prompt", ",".join(map(str, e["prompt"])),
                  "-n", 6).stdout.strip()
        assert [int(t) for t in ids.split(",")] == greedy(cfg, adapted, e["prompt"], 6)


def test_rank_auto_keeps_the_task_accuracy(case):
    out, report = case["export"]("peft-auto", "--format", "peft", "--rank", "auto",
                                 "--tolerance", "0.02")
    full = sum(m["full_rank"] for m in report["matrices"])
    print(f"rank auto: {report['total_rank']} of {full} components, rel. error "
          f"{report['rel_error']:.4f}, {report['bytes']} bytes, scores {report['scores']}")
    assert report["total_rank"] < full
    adapted, acfg = apply_peft(case["base"], out)
    acc, ll = scores(case["cfg"], adapted, case["examples"])
    exact = report["scores"]["exact"]
    assert acc == exact["accuracy"]
    assert abs(ll - exact["loglik"]) <= 0.02 + 1e-4
    # Ranks differ per matrix, and the patterns say so.
    ranks = {m["rank"] for m in report["matrices"]}
    assert len(ranks) > 1 and acfg["rank_pattern"]


def test_fixed_and_uniform_ranks(case):
    out, report = case["export"]("peft-4", "--format", "peft", "--rank", "4")
    assert all(m["rank"] == 4 for m in report["matrices"])
    adapted, acfg = apply_peft(case["base"], out)
    assert acfg["r"] == 4 and not acfg["rank_pattern"]
    out, report = case["export"]("peft-energy", "--format", "peft", "--rank", "energy:0.9",
                                 "--uniform-rank")
    assert len({m["rank"] for m in report["matrices"]}) == 1
    assert all(m["rel_error"] <= math.sqrt(0.1) + 1e-9 for m in report["matrices"])


def test_refusals(case):
    d = case["dir"]
    other = d / "other"
    if not other.exists():
        run("demo-init", other, "--seed", 7)
    r = run("export", "--model", other / "model", "--result", d / "z.safetensors",
            "--format", "peft", "--out", d / "refused", check=False)
    assert r.returncode == 1 and "another base model" in r.stderr, r.stderr
    assert not (d / "refused").exists()
    text = (d / "r.json").read_text()
    (d / "trunc.json").write_text(text[: len(text) // 3])
    r = run("export", "--model", case["model"], "--result", d / "trunc.json", "--format", "peft",
            "--out", d / "refused", check=False)
    assert r.returncode == 1 and "truncated" in r.stderr, r.stderr
    raw = bytearray((d / "z.safetensors").read_bytes())
    raw[-3] ^= 0x01
    (d / "flipped.safetensors").write_bytes(bytes(raw))
    r = run("export", "--model", case["model"], "--result", d / "flipped.safetensors",
            "--format", "merged", "--out", d / "refused", check=False)
    assert r.returncode == 1 and "checksum" in r.stderr, r.stderr
    # A document without z' needs the experts it was made with.
    r = run("export", "--model", case["model"], "--result", d / "r.json", "--format", "peft",
            "--out", d / "refused", check=False)
    assert r.returncode == 1 and "--experts" in r.stderr, r.stderr
    r = run("export", "--model", case["model"], "--result", d / "r.json", "--format", "peft",
            "--experts", ",".join(case["experts"]), "--out", d / "from-alpha", "--json")
    assert json.loads(r.stdout)["rel_error"] == 0
