"""Model architectures against an independent numpy reference.

Each case writes a small random-weight Hugging Face directory (config.json and a
model.safetensors in BF16, F16 or F32) with one architecture feature: RoPE scaling of type
llama3, linear, dynamic or yarn (rope_scaling or transformers 5's rope_parameters), an explicit
head_dim, tied embeddings without lm_head.weight, qwen2's q/k/v biases, mistral's sliding
window. The helper arch_logits loads it with zmix and writes the logits of a few sequences
through the plain forward pass and through the scorer (all sequences stacked in one call);
the reference here computes the same model in float64 from the formulas of transformers
(modeling_rope_utils and the llama/qwen2/mistral modelling code), written independently of
zmix's C. Logits must agree to float32 rounding, and each feature must matter: the reference
without it (plain RoPE, no biases) must be far off, so a test would fail if zmix ignored it.
"""
import json
import math
import os
import struct
import subprocess
import zlib

import numpy as np
import pytest

TOOL = os.environ.get("ZMIX_ARCH_LOGITS", "arch_logits")
# Relative to the largest |logit|: float32 GEMMs and RoPE tables against float64.
TOL = 1e-5
T = 3  # target tokens of each scorer example


# ---- model files ---------------------------------------------------------------------------

def bf16_round(a):
    """float32 -> the nearest bfloat16 (ties to even), as float32 and as raw bits."""
    b = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    bits = ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16)
    return (bits.astype(np.uint32) << 16).view(np.float32), bits


def stored(a, dtype):
    """The values a tensor holds once written in dtype, and its bytes."""
    a = np.asarray(a, dtype=np.float32)
    if dtype == "BF16":
        vals, bits = bf16_round(a)
        return vals, bits.tobytes()
    if dtype == "F16":
        h = a.astype(np.float16)
        return h.astype(np.float32), h.tobytes()
    return a, a.tobytes()


def write_safetensors(path, tensors):
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, (dtype, shape, data) in tensors.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))


def make_model(directory, config, dtype, seed, lm_head=None):
    """Random weights for config, written to directory; returns the weights as float64."""
    rng = np.random.default_rng(seed)
    D, H, V = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    nh = config["num_attention_heads"]
    nkv = config.get("num_key_value_heads", nh)
    hd = config.get("head_dim") or D // nh
    qwen = config["model_type"] == "qwen2"
    tied = config.get("tie_word_embeddings", False)
    w, files = {}, {}

    def add(name, shape, scale, center=0.0):
        vals, data = stored(center + scale * rng.standard_normal(shape), dtype)
        w[name] = vals.astype(np.float64)
        files[name] = (dtype, shape, data)

    add("model.embed_tokens.weight", (V, D), 1.0)
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}."
        add(p + "input_layernorm.weight", (D,), 0.1, 1.0)
        add(p + "self_attn.q_proj.weight", (nh * hd, D), 1 / math.sqrt(D))
        add(p + "self_attn.k_proj.weight", (nkv * hd, D), 1 / math.sqrt(D))
        add(p + "self_attn.v_proj.weight", (nkv * hd, D), 1 / math.sqrt(D))
        add(p + "self_attn.o_proj.weight", (D, nh * hd), 1 / math.sqrt(nh * hd))
        if qwen:
            add(p + "self_attn.q_proj.bias", (nh * hd,), 0.5)
            add(p + "self_attn.k_proj.bias", (nkv * hd,), 0.5)
            add(p + "self_attn.v_proj.bias", (nkv * hd,), 0.5)
        add(p + "post_attention_layernorm.weight", (D,), 0.1, 1.0)
        add(p + "mlp.gate_proj.weight", (H, D), 1 / math.sqrt(D))
        add(p + "mlp.up_proj.weight", (H, D), 1 / math.sqrt(D))
        add(p + "mlp.down_proj.weight", (D, H), 1 / math.sqrt(H))
    add("model.norm.weight", (D,), 0.1, 1.0)
    if not tied:
        add("lm_head.weight", (V, D), 1 / math.sqrt(D))
    elif lm_head == "copy":  # tied, but the checkpoint stores the head anyway
        files["lm_head.weight"] = files["model.embed_tokens.weight"]
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    write_safetensors(os.path.join(directory, "model.safetensors"), files)
    return w


# ---- reference -----------------------------------------------------------------------------

def rope_params(config):
    return config.get("rope_scaling") or config.get("rope_parameters") or {}


def inv_freq(config, seq_len, plain=False):
    """Inverse frequencies and cos/sin scale for a sequence of seq_len tokens (float64)."""
    rp = rope_params(config)
    D, nh = config["hidden_size"], config["num_attention_heads"]
    d = config.get("head_dim") or D // nh
    base = rp.get("rope_theta", config.get("rope_theta", 10000.0))
    kind = rp.get("rope_type", rp.get("type", "default"))
    max_pos = config["max_position_embeddings"]
    exponents = np.arange(0, d, 2, dtype=np.float64) / d
    if plain or kind == "default":
        return base ** -exponents, 1.0
    factor = rp.get("factor")
    if kind == "linear":
        return base ** -exponents / factor, 1.0
    if kind == "dynamic":
        if seq_len > max_pos:
            base = base * (factor * seq_len / max_pos - (factor - 1)) ** (d / (d - 2))
        return base ** -exponents, 1.0
    if kind == "llama3":
        orig = rp["original_max_position_embeddings"]
        lo, hi = rp["low_freq_factor"], rp["high_freq_factor"]
        inv = base ** -exponents
        out = []
        for f in inv:
            wavelen = 2 * math.pi / f
            if wavelen < orig / hi:
                out.append(f)
            elif wavelen > orig / lo:
                out.append(f / factor)
            else:
                s = (orig / wavelen - lo) / (hi - lo)
                out.append((1 - s) * f / factor + s * f)
        return np.array(out), 1.0
    if kind == "yarn":
        orig = rp.get("original_max_position_embeddings", max_pos)
        if factor is None:
            factor = max_pos / orig
        beta_fast, beta_slow = rp.get("beta_fast") or 32, rp.get("beta_slow") or 1

        def mscale(s, m=1.0):
            return 1.0 if s <= 1 else 0.1 * m * math.log(s) + 1.0

        if rp.get("attention_factor") is not None:
            att = rp["attention_factor"]
        elif rp.get("mscale") and rp.get("mscale_all_dim"):
            att = mscale(factor, rp["mscale"]) / mscale(factor, rp["mscale_all_dim"])
        else:
            att = mscale(factor)

        def corr_dim(rot):
            return d * math.log(orig / (rot * 2 * math.pi)) / (2 * math.log(base))

        low, high = corr_dim(beta_fast), corr_dim(beta_slow)
        if rp.get("truncate", True):
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, d - 1)
        if low == high:
            high += 0.001
        ramp = np.clip((np.arange(d // 2) - low) / (high - low), 0, 1)
        keep = 1 - ramp
        pos_freqs = base ** exponents
        return (1 / (factor * pos_freqs)) * (1 - keep) + (1 / pos_freqs) * keep, att
    raise ValueError(kind)


def rmsnorm(x, w, eps):
    return w * x / np.sqrt(np.mean(x * x, axis=-1, keepdims=True) + eps)


def forward(config, w, tokens, plain_rope=False, no_bias=False):
    """Logits at every position of one sequence (len × vocab), float64."""
    D, nh = config["hidden_size"], config["num_attention_heads"]
    nkv = config.get("num_key_value_heads", nh)
    hd = config.get("head_dim") or D // nh
    eps = config.get("rms_norm_eps", 1e-6)
    L = len(tokens)
    inv, att_scale = inv_freq(config, L, plain_rope)
    ang = np.arange(L, dtype=np.float64)[:, None] * inv[None, :]
    cos = np.concatenate([np.cos(ang)] * 2, axis=1) * att_scale
    sin = np.concatenate([np.sin(ang)] * 2, axis=1) * att_scale

    def rotate(x):  # x: (L, heads, hd); rotate_half pairs i with i + hd/2
        rot = np.concatenate([-x[..., hd // 2:], x[..., : hd // 2]], axis=-1)
        return x * cos[:, None, :] + rot * sin[:, None, :]

    x = w["model.embed_tokens.weight"][np.array(tokens)]
    mask = np.triu(np.full((L, L), -np.inf), k=1)
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}."
        h = rmsnorm(x, w[p + "input_layernorm.weight"], eps)
        proj = {}
        for n in "qkv":
            proj[n] = h @ w[p + f"self_attn.{n}_proj.weight"].T
            if not no_bias and p + f"self_attn.{n}_proj.bias" in w:
                proj[n] = proj[n] + w[p + f"self_attn.{n}_proj.bias"]
        q = rotate(proj["q"].reshape(L, nh, hd))
        k = rotate(proj["k"].reshape(L, nkv, hd))
        v = proj["v"].reshape(L, nkv, hd)
        out = np.empty((L, nh, hd))
        for head in range(nh):
            kv = head // (nh // nkv)
            s = q[:, head] @ k[:, kv].T / math.sqrt(hd) + mask
            s = np.exp(s - s.max(axis=1, keepdims=True))
            out[:, head] = (s / s.sum(axis=1, keepdims=True)) @ v[:, kv]
        x = x + out.reshape(L, nh * hd) @ w[p + "self_attn.o_proj.weight"].T
        h = rmsnorm(x, w[p + "post_attention_layernorm.weight"], eps)
        g = h @ w[p + "mlp.gate_proj.weight"].T
        u = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (g / (1 + np.exp(-g)) * u) @ w[p + "mlp.down_proj.weight"].T
    x = rmsnorm(x, w["model.norm.weight"], eps)
    head = w.get("lm_head.weight", w["model.embed_tokens.weight"])
    return x @ head.T


# ---- running zmix --------------------------------------------------------------------------

def run_zmix(model_dir, seqs, tmp):
    seq_path, out_path = os.path.join(tmp, "seqs.txt"), os.path.join(tmp, "logits.bin")
    with open(seq_path, "w") as f:
        f.write(f"{T}\n" + "".join(" ".join(map(str, s)) + "\n" for s in seqs))
    r = subprocess.run([TOOL, model_dir, seq_path, out_path], capture_output=True, text=True,
                       timeout=120)
    return r, out_path


def zmix_logits(model_dir, seqs, vocab, tmp):
    r, out_path = run_zmix(model_dir, seqs, tmp)
    assert r.returncode == 0, r.stderr
    info = json.loads(r.stdout)
    flat = np.fromfile(out_path, dtype="<f4").astype(np.float64)
    full, off = [], 0
    for s in seqs:
        full.append(flat[off: off + len(s) * vocab].reshape(len(s), vocab))
        off += len(s) * vocab
    scorer = flat[off:].reshape(len(seqs), T, vocab)
    return info, full, scorer


def base_config(model_type="llama", **kw):
    c = {"architectures": ["LlamaForCausalLM"], "model_type": model_type, "hidden_size": 64,
         "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4,
         "num_key_value_heads": 2, "vocab_size": 97, "max_position_embeddings": 512,
         "rms_norm_eps": 1e-5, "rope_theta": 10000.0, "hidden_act": "silu",
         "tie_word_embeddings": False, "bos_token_id": 1, "eos_token_id": 2,
         "initializer_range": 0.02, "use_cache": True, "attention_dropout": 0.0,
         "torch_dtype": "bfloat16", "transformers_version": "4.46.0"}
    c.update(kw)
    return c


LLAMA3 = {"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 64, "rope_type": "llama3"}
# Llama 3.1's own values at a small scale: θ = 500000, GQA, the llama3 scaling from 64
# positions to 512 (with head_dim 16, pair 0 keeps its frequency, pair 1 is blended, the
# rest are stretched), eos a list, attention/mlp bias false.
LLAMA31 = dict(rope_theta=500000.0, rope_scaling=LLAMA3, eos_token_id=[2, 3], attention_bias=False,
               mlp_bias=False, pretraining_tp=1)
# Qwen2.5-0.5B's choices at a small scale: q/k/v biases, θ = 10⁶, tied embeddings (no
# lm_head.weight), a sliding window configured but not used.
QWEN25 = dict(architectures=["Qwen2ForCausalLM"], rope_theta=1000000.0, rms_norm_eps=1e-6,
              tie_word_embeddings=True, use_sliding_window=False, sliding_window=4096,
              max_window_layers=1, max_position_embeddings=1024, bos_token_id=90, eos_token_id=91)

CASES = {
    # name: (config, dtype, sequence lengths, what to switch off in the reference, lm_head)
    "llama31_untied_bf16": (base_config(**LLAMA31), "BF16", [9, 30, 57], "rope", None),
    "llama31_tied_bf16": (base_config(**{**LLAMA31, "tie_word_embeddings": True}), "BF16",
                          [40, 12], "rope", None),
    "llama31_tied_head_stored_f16": (base_config(**{**LLAMA31, "tie_word_embeddings": True}),
                                     "F16", [33], "rope", "copy"),
    # transformers 5 writes rope_parameters, with rope_theta inside.
    "llama31_rope_parameters_bf16": (
        {k: v for k, v in base_config(**LLAMA31, rope_parameters={**LLAMA3, "rope_theta": 5e5}).items()
         if k not in ("rope_scaling", "rope_theta")}, "BF16", [50], "rope", None),
    "qwen25_bf16": (base_config("qwen2", **QWEN25), "BF16", [6, 25, 48], "bias", None),
    "qwen25_yarn_bf16": (
        base_config("qwen2", **{**QWEN25, "max_position_embeddings": 32, "rope_theta": 10000.0,
                                "rope_scaling": {"factor": 4.0, "type": "yarn",
                                                 "original_max_position_embeddings": 32}}),
        "BF16", [20, 61], "rope", None),
    "yarn_options_f16": (
        base_config(max_position_embeddings=64,
                    rope_scaling={"rope_type": "yarn", "factor": 8.0, "beta_fast": 16.0,
                                  "beta_slow": 2.0, "mscale": 1.0, "mscale_all_dim": 0.5,
                                  "truncate": False}), "F16", [45], "rope", None),
    "linear_f32": (base_config(rope_scaling={"type": "linear", "factor": 4.0}), "F32", [17, 44],
                   "rope", None),
    # max_position_embeddings 16, factor 2: usable up to 32 tokens; the 12-token sequence keeps
    # plain RoPE, the 30-token one gets θ grown for 30 (for the scorer: 29) positions.
    "dynamic_bf16": (base_config(max_position_embeddings=16,
                                 rope_scaling={"rope_type": "dynamic", "factor": 2.0}), "BF16",
                     [12, 30, 22], "rope", None),
    # Mistral-Nemo-style head_dim (16, not 64 / 6) and a window no shorter than the context.
    "mistral_head_dim_bf16": (base_config("mistral", num_attention_heads=6, num_key_value_heads=2,
                                          head_dim=16, max_position_embeddings=128,
                                          sliding_window=128), "BF16", [31, 8], None, None),
    "llama_plain_f32": (base_config(), "F32", [26], None, None),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_logits_match_reference(name, tmp_path):
    config, dtype, lengths, feature, lm_head = CASES[name]
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    d = str(tmp_path / "model")
    w = make_model(d, config, dtype, seed=7, lm_head=lm_head)
    V = config["vocab_size"]
    seqs = [list(map(int, rng.integers(0, V, size=n))) for n in lengths]
    info, full, scorer = zmix_logits(d, seqs, V, str(tmp_path))

    worst, scale, off_by = 0.0, 0.0, 0.0
    for s, got, got_scorer in zip(seqs, full, scorer):
        ref = forward(config, w, s)
        worst = max(worst, np.abs(got - ref).max())
        scale = max(scale, np.abs(ref).max())
        # The scorer feeds prompt + target[:-1] (len - 1 tokens): its rows predict the target.
        ref_s = forward(config, w, s[:-1])[len(s) - 1 - T:]
        worst = max(worst, np.abs(got_scorer - ref_s).max())
        if feature:
            alt = forward(config, w, s, plain_rope=feature == "rope", no_bias=feature == "bias")
            off_by = max(off_by, np.abs(alt - ref).max())
    print(f"{name}: max |zmix - numpy| = {worst:.3g}, max |logit| = {scale:.3g}, "
          f"relative {worst / scale:.2e}; without the feature {off_by / scale:.2e}; {info}")
    assert scale > 1
    assert worst <= TOL * scale
    if feature:
        assert off_by >= 100 * TOL * scale, "the feature does not change these logits"


def test_context_lengths(tmp_path):
    """The usable context each scaling implies, and the sliding-window cap."""
    cases = [
        (base_config(**LLAMA31), 512),
        (base_config(max_position_embeddings=16, rope_scaling={"type": "dynamic", "factor": 2.0}),
         32),
        (base_config("qwen2", **{**QWEN25, "max_position_embeddings": 32,
                                 "rope_scaling": {"factor": 4.0, "type": "yarn",
                                                  "original_max_position_embeddings": 32}}), 128),
        (base_config("mistral", max_position_embeddings=128, sliding_window=40), 40),
        (base_config("qwen2", **{**QWEN25, "use_sliding_window": True, "sliding_window": 24}), 24),
        (base_config("qwen2", **QWEN25), 1024),
    ]
    for i, (config, context) in enumerate(cases):
        d = str(tmp_path / f"m{i}")
        make_model(d, config, "BF16", seed=i)
        r, _ = run_zmix(d, [[1] * 5], str(tmp_path))
        assert r.returncode == 0, r.stderr
        assert json.loads(r.stdout)["max_seq_len"] == context, (config, r.stdout)


def test_dynamic_rope_past_the_context_is_refused(tmp_path):
    config = base_config(max_position_embeddings=16, rope_scaling={"type": "dynamic",
                                                                   "factor": 2.0})
    d = str(tmp_path / "model")
    make_model(d, config, "BF16", seed=1)
    r, _ = run_zmix(d, [[1] * 33], str(tmp_path))
    assert r.returncode == 1
    assert "context length 32" in r.stderr


def test_fingerprint_follows_values_not_storage(tmp_path):
    """BF16 and F32 files of the same values are the same model; RoPE scaling is not."""
    config = base_config(**LLAMA31)
    prints = []
    for i, (dtype, cfg) in enumerate([("BF16", config), ("F32", config),
                                      ("BF16", {**config, "rope_scaling": {**LLAMA3,
                                                                           "factor": 4.0}})]):
        d = str(tmp_path / f"m{i}")
        w = make_model(d, cfg, "BF16", seed=3)
        if dtype == "F32":  # the BF16 values, written as F32
            files = {n: ("F32", v.shape, v.astype(np.float32).tobytes()) for n, v in w.items()}
            write_safetensors(os.path.join(d, "model.safetensors"), files)
        r, _ = run_zmix(d, [[1] * 5], str(tmp_path))
        assert r.returncode == 0, r.stderr
        prints.append(json.loads(r.stdout)["fingerprint"])
    assert prints[0] == prints[1]
    assert prints[0] != prints[2]
