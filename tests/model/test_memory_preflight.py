"""zmixd refuses a model that will not fit before doing any work.

The model is a Llama-shaped BF16 checkpoint of about 1 TB whose safetensors file is sparse
(a real header, no data written), so no machine running the tests has the memory for it and
the test costs nothing. zmixd must print its memory plan, exit with an error naming the model,
the memory it needs and MemAvailable, and not have loaded anything: the expert files do not
even exist, and the factor cache directory is never created.
"""
import json
import os
import struct
import subprocess
import time

ZMIXD = os.environ.get("ZMIXD", "zmixd")


def sparse_model(d, dim=32768, hidden=131072, layers=32, heads=64, kv=8, vocab=128256):
    hd = dim // heads
    shapes = {"model.embed_tokens.weight": [vocab, dim], "model.norm.weight": [dim],
              "lm_head.weight": [vocab, dim]}
    for l in range(layers):
        p = f"model.layers.{l}."
        shapes.update({p + "input_layernorm.weight": [dim],
                       p + "post_attention_layernorm.weight": [dim],
                       p + "self_attn.q_proj.weight": [heads * hd, dim],
                       p + "self_attn.k_proj.weight": [kv * hd, dim],
                       p + "self_attn.v_proj.weight": [kv * hd, dim],
                       p + "self_attn.o_proj.weight": [dim, heads * hd],
                       p + "mlp.gate_proj.weight": [hidden, dim],
                       p + "mlp.up_proj.weight": [hidden, dim],
                       p + "mlp.down_proj.weight": [dim, hidden]})
    header, off = {}, 0
    for name, shape in shapes.items():
        n = 2 * shape[0] * (shape[1] if len(shape) > 1 else 1)
        header[name] = {"dtype": "BF16", "shape": shape, "data_offsets": [off, off + n]}
        off += n
    text = json.dumps(header).encode()
    text += b" " * (-len(text) % 8)
    os.makedirs(d)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text)
        f.truncate(8 + len(text) + off)
    config = {"model_type": "llama", "hidden_size": dim, "intermediate_size": hidden,
              "num_hidden_layers": layers, "num_attention_heads": heads,
              "num_key_value_heads": kv, "vocab_size": vocab, "max_position_embeddings": 131072,
              "rope_theta": 500000.0, "torch_dtype": "bfloat16",
              "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                               "high_freq_factor": 4.0,
                               "original_max_position_embeddings": 8192}}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(config, f)
    return off


def test_refused_before_any_work(tmp_path):
    model = str(tmp_path / "huge")
    size = sparse_model(model)
    assert size > 900 * 2**30
    experts = ",".join(str(tmp_path / f"absent{k}.safetensors") for k in range(3))
    cache = tmp_path / "cache"
    t0 = time.time()
    r = subprocess.run([ZMIXD, "--model", model, "--experts", experts, "--workers", "2",
                        "--cache-dir", str(cache), "--listen", f"unix:{tmp_path}/s.sock"],
                       capture_output=True, text=True, timeout=60)
    took = time.time() - t0
    out = r.stdout + r.stderr
    assert r.returncode != 0, out
    assert "memory plan: weights " in out and "TiB" in out, out
    assert f"{model}: needs " in out and "but MemAvailable is" in out, out
    assert "no setting of --workers or --factor-dtype makes it fit" in out, out
    assert "(--memory-limit sets the limit instead)" in out, out
    # Nothing was loaded: the (absent) experts were never opened, no factors were made.
    assert "absent0" not in out, out
    # (the cache's directories are made and checked first; no factor file is written)
    assert not list((cache / "factors").glob("*")) if (cache / "factors").exists() else True
    assert took < 10, took


def test_zmix_adapt_refuses_and_names_its_options(tmp_path):
    """zmix adapt plans too, against MemAvailable or --memory-limit, in its own option names."""
    zmix = os.environ.get("ZMIX_BIN", "zmix")
    model = str(tmp_path / "huge")
    sparse_model(model)
    ex = tmp_path / "ex.json"
    ex.write_text(json.dumps({"examples": [{"prompt": [1, 2], "target": [3]}]}))
    base = [zmix, "adapt", "--model", model, "--experts", "a,b,c", "--examples", str(ex)]
    r = subprocess.run(base + ["--threads", "2"], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "but MemAvailable is" in r.stderr and "(--memory-limit sets the limit instead)" in \
        r.stderr, r.stderr
    assert "no setting of --threads or --factor-dtype makes it fit" in r.stderr, r.stderr
    # A limit that float32 factors exceed but 16-bit ones meet: named as the way out.
    small = str(tmp_path / "small")
    sparse_model(small, dim=1024, hidden=4096, layers=8, heads=16, kv=4, vocab=32000)
    base[3] = small
    r = subprocess.run(base + ["--factor-dtype", "f32", "--memory-limit", "2500M"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "but --memory-limit is 2.44 GiB; it fits with --factor-dtype f16" in r.stderr, r.stderr


def test_zmixd_takes_a_limit_and_names_its_options(tmp_path):
    """zmixd's --memory-limit replaces MemAvailable, and the refusal names the way out: the
    factored W' mode when the expert matrices are what does not fit (the factors, read from
    the factor cache's mapping, do not stay resident beside them), --factor-dtype when 16-bit
    factors would fit."""
    small = str(tmp_path / "small")
    sparse_model(small, dim=1024, hidden=4096, layers=8, heads=16, kv=4, vocab=32000)

    def zmixd(*extra):
        r = subprocess.run([ZMIXD, "--model", small, "--experts", "a,b,c", "--workers", "1",
                            "--cache-dir", str(tmp_path / "cache"), "--factor-dtype", "f32",
                            "--cache-bytes", "1M", "--listen", f"unix:{tmp_path}/s.sock",
                            *extra], capture_output=True, text=True, timeout=60)
        out = r.stdout + r.stderr
        assert r.returncode != 0, out
        return out

    # Linear: 2.14 GiB (the expert matrices, 1.13 GiB, and σ of the factors); factored: 1.48
    # GiB with F32 factors, 1.25 GiB with F16 ones.
    out = zmixd("--memory-limit", "2000M")
    assert "total 2.14 GiB scoring (W' mode linear)" in out, out
    assert "W' mode factored: 1.48 GiB scoring" in out, out
    assert "but --memory-limit is 1.95 GiB; it fits with --wprime factored" in out, out
    out = zmixd("--memory-limit", "1400M", "--wprime", "factored")
    assert "but --memory-limit is 1.37 GiB; it fits with --factor-dtype f16" in out, out
    out = zmixd("--memory-limit", "1000M", "--wprime", "factored")
    assert "no setting of --workers or --factor-dtype makes it fit" in out, out
    out = zmixd("--memory-limit", "1000M")
    assert "no setting of --workers, --factor-dtype or --wprime makes it fit" in out, out
