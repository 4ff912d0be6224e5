"""Text examples on models with a Hugging Face tokenizer.json: a small random-weight LLaMA
directory with one of the test tokenizers (tests/model/tokenizers/), driven through the CLI
(`zmix score`, `zmix adapt`, and `zmix submit`, which sends the text as it is) and a real
zmixd, which encodes it with the model's tokenizer. The ids it must arrive at are the reference
implementation's (the tokenizers library on the same files, see test_tokenizer_parity.py): the
daemon files a job under a key over the encoded tokens, so submitting those ids after the text
is a cache hit exactly when the daemon encoded the text to them."""

import json
import os
import random
import struct

import pytest

from cli_fixtures import SOURCE_DIR, ZMIX, requires_cli, run, write_examples
from conftest import Daemon, ZMIXD

pytestmark = requires_cli

FIXTURES = os.path.join(SOURCE_DIR, "tests", "model", "tokenizers")
SMALL = ["--pop", "8", "--iters", "2", "--std-tol", "0"]

TEXT = [{"prompt": "Q: 17 + 25 = ?\nA:", "target": " 42"},
        {"prompt": "The quick brown fox", "target": " jumps over"},
        {"prompt": "Größe und Übung:", "target": " schön<|eot_id|>"},
        {"prompt": "日本語のテキスト", "target": "です🎉"}]
# The tokenizers library's ids for TEXT: the prompt as tok(prompt), the target as
# tok(target, add_special_tokens=False).
REFERENCE = {
    "llama3-mini": [
        ([709, 81, 58, 32, 49, 55, 32, 43, 32, 50, 53, 401, 32, 63, 10, 65, 58], [32, 463]),
        ([709, 509, 406, 602, 287, 647, 32, 591], [32, 615, 295, 657]),
        ([709, 492, 32, 117, 266, 296, 156, 557, 58], [422, 195, 182, 110, 713]),
        ([709, 230, 151, 705, 392, 136], [276, 374, 153, 285, 142, 137])],
    "llama2-mini": [
        ([1, 259, 84, 292, 413, 337, 259, 315, 472, 296, 474, 259, 320, 269, 68, 292],
         [259, 259, 626]),
        ([1, 259, 308, 368, 478, 738, 384, 407, 289, 262, 259, 727], [259, 259, 750, 392, 309, 371]),
        ([1, 259, 74, 263, 346, 198, 162, 260, 259, 271, 374, 259, 198, 159, 684, 292],
         [259, 492, 346, 262, 63, 127, 260, 266, 261, 652, 127, 338]),
        ([1, 259, 233, 154, 168, 233, 159, 175, 235, 173, 161, 230, 132, 177, 230, 134, 137, 230,
          133, 176, 230, 133, 188, 230, 134, 139], [259, 230, 132, 170, 230, 132, 156, 243, 162,
                                                    145, 140])],
}

CONFIG = {"model_type": "llama", "hidden_size": 16, "intermediate_size": 24,
          "num_hidden_layers": 2, "num_attention_heads": 2, "num_key_value_heads": 1,
          "vocab_size": 800, "max_position_embeddings": 256, "rms_norm_eps": 1e-5,
          "tie_word_embeddings": True, "hidden_act": "silu"}


def write_tensors(path, tensors, metadata=None):
    """tensors: {name: (shape, flat list of floats)} as F32."""
    header, blobs, offset = {}, [], 0
    for name, (shape, values) in tensors.items():
        blob = struct.pack("<%df" % len(values), *values)
        header[name] = {"dtype": "F32", "shape": list(shape),
                        "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    raw += b" " * ((8 - len(raw) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def make_model(directory, tokenizer, seed=5):
    """A random-weight LLaMA directory with the named test tokenizer; returns expert paths."""
    os.makedirs(directory, exist_ok=True)
    rng = random.Random(seed)
    c = CONFIG
    dim, hid, vocab = c["hidden_size"], c["intermediate_size"], c["vocab_size"]
    hd = dim // c["num_attention_heads"]
    kv = c["num_key_value_heads"] * hd

    def mat(rows, cols):
        return ((rows, cols), [rng.gauss(0, cols ** -0.5) for _ in range(rows * cols)])

    t = {"model.embed_tokens.weight": mat(vocab, dim), "model.norm.weight": ((dim,), [1.0] * dim)}
    for layer in range(c["num_hidden_layers"]):
        p = "model.layers.%d." % layer
        t[p + "input_layernorm.weight"] = ((dim,), [1.0] * dim)
        t[p + "post_attention_layernorm.weight"] = ((dim,), [1.0] * dim)
        t[p + "self_attn.q_proj.weight"] = mat(dim, dim)
        t[p + "self_attn.k_proj.weight"] = mat(kv, dim)
        t[p + "self_attn.v_proj.weight"] = mat(kv, dim)
        t[p + "self_attn.o_proj.weight"] = mat(dim, dim)
        t[p + "mlp.gate_proj.weight"] = mat(hid, dim)
        t[p + "mlp.up_proj.weight"] = mat(hid, dim)
        t[p + "mlp.down_proj.weight"] = mat(dim, hid)
    write_tensors(os.path.join(directory, "model.safetensors"), t)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(c, f)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        with open(os.path.join(FIXTURES, tokenizer, name), "rb") as src:
            data = src.read()
        with open(os.path.join(directory, name), "wb") as dst:
            dst.write(data)
    experts = []
    for e in range(2):
        vectors = {}
        for layer in range(c["num_hidden_layers"]):
            for kind in ("gate_proj", "up_proj", "down_proj"):
                vectors["model.layers.%d.mlp.%s.weight" % (layer, kind)] = (
                    (min(dim, hid),), [rng.uniform(0.5, 1.5) for _ in range(min(dim, hid))])
        path = os.path.join(os.path.dirname(directory), "expert%d.safetensors" % e)
        write_tensors(path, vectors, {"name": "e%d" % e})
        experts.append(path)
    return experts


def ids_examples(tokenizer):
    return [{"prompt": p, "target": t} for p, t in REFERENCE[tokenizer]]


@pytest.fixture(params=sorted(REFERENCE))
def model(request, tmp_path):
    if not ZMIXD or not ZMIX:
        pytest.skip("zmix and zmixd not built")
    experts = make_model(str(tmp_path / "model"), request.param)
    return request.param, str(tmp_path / "model"), experts


def test_offline_commands_encode_text_like_the_reference(model, tmp_path):
    tokenizer, directory, experts = model
    text = write_examples(tmp_path / "text.json", TEXT)
    ids = write_examples(tmp_path / "ids.json", ids_examples(tokenizer))
    scores = []
    for ex in (text, ids):
        r = run([ZMIX, "score", "--model", directory, "--examples", ex,
                 "--experts", ",".join(experts), "--alpha", "0.5,0.5"])
        assert r.rc == 0, r
        scores.append(r.out)
    # The same tokens give the same report, to the last digit.
    assert scores[0] == scores[1]
    r = run([ZMIX, "adapt", "--model", directory, "--experts", ",".join(experts),
             "--examples", text, *SMALL, "--out", str(tmp_path / "result.json")])
    assert r.rc == 0, r
    assert json.load(open(tmp_path / "result.json"))["stop_reason"] == "max_generations"
    # An empty prompt is the BOS these tokenizers put before a text.
    bos = write_examples(tmp_path / "bos.json", [{"prompt": "", "target": "z"}])
    r = run([ZMIX, "score", "--model", directory, "--examples", bos])
    assert r.rc == 0 and json.loads(r.out)["n_examples"] == 1, r


def test_daemon_encodes_text_like_the_reference(model, tmp_path):
    tokenizer, directory, experts = model
    d = Daemon(str(tmp_path / "d"), experts, model=directory).start()
    try:
        text = write_examples(tmp_path / "text.json", TEXT)
        r = run([ZMIX, "submit", "t", "--examples", text, *SMALL, "--wait", "--json",
                 "--socket", d.socket])
        assert r.rc == 0, r
        done = json.loads(r.out)
        ids = write_examples(tmp_path / "ids.json", ids_examples(tokenizer))
        r = run([ZMIX, "submit", "t", "--examples", ids, *SMALL, "--json", "--socket", d.socket])
        assert r.rc == 0, r
        again = r.json()
        assert again["cached"] is True, (again, done)
        # One token off is another task: the hit above is not a hit on anything.
        off = ids_examples(tokenizer)
        off[0]["target"] = off[0]["target"][:-1] + [off[0]["target"][-1] + 1]
        r = run([ZMIX, "submit", "t", "--examples", write_examples(tmp_path / "off.json", off),
                 *SMALL, "--json", "--socket", d.socket])
        assert r.rc == 0 and r.json()["cached"] is False, r
    finally:
        assert d.stop() == 0, d.log_text()
