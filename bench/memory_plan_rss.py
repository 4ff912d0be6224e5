#!/usr/bin/env python3
"""zmixd's memory plan against the memory it really uses (peak RSS, VmHWM).

Writes a random-weight BF16 model of a real family's shape (Llama 3.1: llama3 RoPE scaling,
GQA, tied or untied embeddings; Qwen2.5: q/k/v biases, tied), three experts for its MLP
matrices, starts zmixd on it (--workers N, a fresh cache directory), submits one job with
the CLI and waits for it, then reads zmixd's VmHWM from /proc. A second start finds the factor
cache. Prints the plan line zmixd logged and the measured peaks, and exits 1 when a peak is
above the plan.

    bench/memory_plan_rss.py --build build [--shape llama31|llama31-tied|qwen25|all]
                             [--scale small|1b] [--workers 2] [--keep DIR]

Not a test (it takes a minute or more and gigabytes): a measurement, reported in
docs/model-formats.md.
"""
import argparse
import json
import math
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import tempfile
import time

import numpy as np

SCALES = {
    # dim, hidden, layers, heads, kv heads, vocab
    "small": (1024, 4096, 8, 16, 4, 32000),
    "135m": (576, 1536, 30, 9, 3, 49152),  # SmolLM2-135M (tied: use --shape llama31-tied)
    "1b": (2048, 8192, 16, 32, 8, 128256),  # Llama-3.2-1B
}


def config_for(shape, scale):
    dim, hidden, layers, heads, kv, vocab = SCALES[scale]
    c = {"hidden_size": dim, "intermediate_size": hidden, "num_hidden_layers": layers,
         "num_attention_heads": heads, "num_key_value_heads": kv, "vocab_size": vocab,
         "hidden_act": "silu", "rms_norm_eps": 1e-5, "torch_dtype": "bfloat16",
         "bos_token_id": 1, "eos_token_id": 2}
    if shape.startswith("llama31"):
        c.update(model_type="llama", architectures=["LlamaForCausalLM"],
                 max_position_embeddings=131072, rope_theta=500000.0,
                 tie_word_embeddings=shape.endswith("tied"),
                 rope_scaling={"factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192, "rope_type": "llama3"})
    else:
        c.update(model_type="qwen2", architectures=["Qwen2ForCausalLM"],
                 max_position_embeddings=32768, rope_theta=1000000.0, tie_word_embeddings=True,
                 use_sliding_window=False, sliding_window=32768, max_window_layers=21,
                 rms_norm_eps=1e-6)
    return c


def bf16_bytes(a):
    b = np.ascontiguousarray(a, dtype=np.float32).view(np.uint32).astype(np.uint64)
    return ((b + 0x7FFF + ((b >> 16) & 1)) >> 16).astype(np.uint16).tobytes()


def write_safetensors(path, entries):
    """entries: name -> (dtype, shape, bytes); written without holding them all twice."""
    header, off = {"__metadata__": {"format": "pt"}}, 0
    for name, (dtype, shape, data) in entries.items():
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [off, off + len(data)]}
        off += len(data)
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        for _, (_, _, data) in entries.items():
            f.write(data)


def write_model(d, c, seed=1):
    rng = np.random.default_rng(seed)
    D, H, V = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    nh, nkv = c["num_attention_heads"], c["num_key_value_heads"]
    hd = D // nh
    e = {}

    def mat(name, rows, cols):
        e[name] = ("BF16", (rows, cols),
                   bf16_bytes(rng.standard_normal((rows, cols), dtype=np.float32) / math.sqrt(cols)))

    def vec(name, n, scale=0.0, center=1.0):
        e[name] = ("BF16", (n,), bf16_bytes(center + scale * rng.standard_normal(n, dtype=np.float32)))

    mat("model.embed_tokens.weight", V, D)
    for l in range(c["num_hidden_layers"]):
        p = f"model.layers.{l}."
        vec(p + "input_layernorm.weight", D)
        mat(p + "self_attn.q_proj.weight", nh * hd, D)
        mat(p + "self_attn.k_proj.weight", nkv * hd, D)
        mat(p + "self_attn.v_proj.weight", nkv * hd, D)
        mat(p + "self_attn.o_proj.weight", D, nh * hd)
        if c["model_type"] == "qwen2":
            for n, k in (("q", nh), ("k", nkv), ("v", nkv)):
                vec(p + f"self_attn.{n}_proj.bias", k * hd, 0.5, 0.0)
        vec(p + "post_attention_layernorm.weight", D)
        mat(p + "mlp.gate_proj.weight", H, D)
        mat(p + "mlp.up_proj.weight", H, D)
        mat(p + "mlp.down_proj.weight", D, H)
    vec("model.norm.weight", D)
    if not c["tie_word_embeddings"]:
        mat("lm_head.weight", V, D)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(c, f, indent=1)
    write_safetensors(os.path.join(d, "model.safetensors"), e)


def write_experts(d, c, k=3, seed=2):
    rng = np.random.default_rng(seed)
    D, H = c["hidden_size"], c["intermediate_size"]
    rank = min(D, H)
    paths = []
    for i in range(k):
        e = {}
        for l in range(c["num_hidden_layers"]):
            for m in ("gate_proj", "up_proj", "down_proj"):
                z = (1 + 0.1 * rng.standard_normal(rank)).astype("<f4")
                e[f"model.layers.{l}.mlp.{m}.weight"] = ("F32", (rank,), z.tobytes())
        path = os.path.join(d, f"expert{i}.safetensors")
        write_safetensors(path, e)
        paths.append(path)
    return paths


def status(pid, key):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) * 1024
    return 0


def parse_size(text):
    v, unit = text.split()
    return float(v) * {"B": 1, "KiB": 2**10, "MiB": 2**20, "GiB": 2**30, "TiB": 2**40}[unit]


def start_daemon(build, model, experts, work, workers, log, extra=()):
    """zmixd on the model with a cache directory in work, up to "zmixd ready" (exits the
    program, with zmixd's log, if it stops first). Returns the process, its socket, the
    environment to run zmix with, and the seconds it took to be ready."""
    sock = os.path.join(work, "zmixd.sock")
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    with open(log, "w") as lf:
        p = subprocess.Popen([os.path.join(build, "zmixd"), "--model", model, "--experts",
                              ",".join(experts), "--cache-dir", os.path.join(work, "cache"),
                              "--listen", "unix:" + sock, "--workers", str(workers), *extra],
                             stdout=lf, stderr=subprocess.STDOUT, env=env)
    t0 = time.time()
    while "zmixd ready" not in open(log).read():
        if p.poll() is not None:
            sys.exit(f"zmixd exited:\n{open(log).read()}")
        time.sleep(0.2)
    return p, sock, env, time.time() - t0


def run_daemon(build, model, experts, work, workers, examples, label, extra=()):
    log = os.path.join(work, f"zmixd-{label}.log")
    p, sock, env, ready_s = start_daemon(build, model, experts, work, workers, log, extra)
    hwm_ready = status(p.pid, "VmHWM")
    r = subprocess.run([os.path.join(build, "zmix"), "submit", f"rss-{label}", "--examples",
                        examples, "--pop", "16", "--iters", "3", "--per-layer", "--recompute",
                        "--wait", "--socket", sock], capture_output=True, text=True, env=env)
    if r.returncode != 0:
        sys.exit(f"zmix submit: {r.stdout}{r.stderr}")
    hwm = status(p.pid, "VmHWM")
    rss = status(p.pid, "VmRSS")
    p.terminate()
    p.wait(timeout=60)
    text = open(log).read()
    line = re.search(r"memory plan: .*", text).group(0)
    steady = parse_size(re.search(r"total ([\d.]+ \w+) scoring", line).group(1))
    setup = parse_size(re.search(r", ([\d.]+ \w+) while (?:factoring|setting up)", line).group(1))
    return dict(line=line, ready_s=ready_s, hwm_ready=hwm_ready, hwm=hwm, rss=rss,
                plan_steady=steady, plan_setup=setup)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--build", default="build")
    ap.add_argument("--shape", default="all", choices=["llama31", "llama31-tied", "qwen25", "all"])
    ap.add_argument("--scale", default="small", choices=sorted(SCALES))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--keep", help="write the models here and keep them")
    ap.add_argument("--wprime", default="default",
                    help="comma-separated W' modes to run zmixd with (auto, factored; default: "
                         "no --wprime flag)")
    ap.add_argument("--repeat", type=int, default=1)
    a = ap.parse_args()
    shapes = ["llama31", "llama31-tied", "qwen25"] if a.shape == "all" else [a.shape]
    root = a.keep or tempfile.mkdtemp(prefix="zmix-rss-")
    bad = 0
    try:
        for shape in shapes:
            work = os.path.join(root, shape)
            shutil.rmtree(work, ignore_errors=True)
            model = os.path.join(work, "model")
            c = config_for(shape, a.scale)
            write_model(model, c)
            experts = write_experts(work, c)
            rng = np.random.default_rng(5)
            ex = [{"prompt": [int(t) for t in rng.integers(3, c["vocab_size"], 40)],
                   "target": [int(t) for t in rng.integers(3, c["vocab_size"], 4)]}
                  for _ in range(8)]
            examples = os.path.join(work, "ex.json")
            json.dump({"examples": ex}, open(examples, "w"))
            size = os.path.getsize(os.path.join(model, "model.safetensors"))
            print(f"== {shape} ({a.scale}): model.safetensors {size / 2**30:.2f} GiB (BF16), "
                  f"{a.workers} workers")
            for mode in a.wprime.split(","):
                extra = () if mode == "default" else ("--wprime", mode)
                for label in ("first start (factoring)", "second start (factor cache)"):
                    runs = []
                    for _ in range(a.repeat):
                        if label.startswith("first"):
                            shutil.rmtree(os.path.join(work, "cache"), ignore_errors=True)
                        runs.append(run_daemon(a.build, model, experts, work, a.workers,
                                               examples, label.split()[0], extra))
                    m = runs[0]
                    med = {k: statistics.median(r[k] for r in runs)
                           for k in ("ready_s", "hwm_ready", "hwm", "rss")}
                    plan = max(m["plan_steady"], m["plan_setup"])
                    print(f"  --wprime {mode}, {label}: ready in {med['ready_s']:.1f} s "
                          f"(median of {len(runs)})")
                    print(f"    {m['line']}")
                    print(f"    VmHWM {med['hwm'] / 2**30:.3f} GiB after one job "
                          f"({med['hwm_ready'] / 2**30:.3f} GiB at ready), VmRSS "
                          f"{med['rss'] / 2**30:.3f} GiB; plan peak {plan / 2**30:.2f} GiB: "
                          f"{med['hwm'] / plan:.0%} of the plan")
                    print("    runs (VmHWM at ready / after the job, MiB): " +
                          ", ".join(f"{r['hwm_ready'] / 2**20:.0f}/{r['hwm'] / 2**20:.0f}"
                                    for r in runs))
                    bad += med["hwm"] > plan
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
