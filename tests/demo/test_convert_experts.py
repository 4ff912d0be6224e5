"""examples/python/convert_experts.py: reference-style expert files (JSON, .npz, and the
PyTorch reader with a stand-in torch module, since PyTorch is not installed here) become zmix
expert files that `zmix score` loads and scores like the original vectors.

The vectors come from a generated demo's expert (zmix demo-init): we write them out the way
the reference stores them, convert back, and compare."""
import importlib.util
import json
import math
import os
import struct
import subprocess
import sys
import types
import zipfile

import pytest

ZMIX = os.environ.get("ZMIX_CLI", "zmix")
SOURCE = os.environ.get("ZMIX_SOURCE_DIR",
                        os.path.join(os.path.dirname(__file__), "..", ".."))
SCRIPT = os.path.join(SOURCE, "examples", "python", "convert_experts.py")

spec = importlib.util.spec_from_file_location("convert_experts", SCRIPT)
ce = importlib.util.module_from_spec(spec)
spec.loader.exec_module(ce)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    meta = header.pop("__metadata__", {})
    body = data[8 + n:]
    out = {}
    for k, t in header.items():
        assert t["dtype"] == "F32"
        b, e = t["data_offsets"]
        out[k] = body[b:e]
    return out, meta


def floats(blob):
    return list(struct.unpack(f"<{len(blob) // 4}f", blob))


def write_npy(values):
    header = repr({"descr": "<f4", "fortran_order": False, "shape": (len(values),)})
    header = header.encode("latin1")
    header += b" " * (-(10 + len(header) + 1) % 64) + b"\n"
    return (b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header +
            struct.pack(f"<{len(values)}f", *values))


def score(demo, expert):
    r = subprocess.run([ZMIX, "score", "--model", f"{demo}/model", "--experts", expert,
                        "--alpha", "1", "--examples", f"{demo}/task.tokens.json"],
                       capture_output=True, text=True, check=True)
    return json.loads(r.stdout)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    d = tmp_path_factory.mktemp("demo") / "demo"
    subprocess.run([ZMIX, "demo-init", str(d), "--examples", "4", "--heldout", "0"],
                   check=True, capture_output=True)
    tensors, meta = read_safetensors(f"{d}/experts/red.safetensors")
    assert meta["name"] == "red"
    return str(d), tensors


def run_convert(*args):
    return subprocess.run([sys.executable, SCRIPT, *args], capture_output=True, text=True)


def test_json_with_sigmoid_gives_the_trained_z(demo, tmp_path):
    d, red = demo
    z = {k: floats(v) for k, v in red.items()}
    mult = 1.1 * max(max(v) for v in z.values())
    # What the reference stores: raw policy parameters p with z = sigmoid(p) * max_mult.
    p = {k: [math.log((x / mult) / (1 - x / mult)) for x in v] for k, v in z.items()}
    src = tmp_path / "math_expert.json"
    src.write_text(json.dumps(p))
    r = run_convert(str(src), "--out-dir", str(tmp_path / "out"), "--model", f"{d}/model",
                    "--max-mult", repr(mult))
    assert r.returncode == 0, r.stderr
    out = tmp_path / "out" / "math_expert.safetensors"
    assert r.stdout.strip() == str(out)
    got, meta = read_safetensors(out)
    assert meta["name"] == "math_expert"
    assert set(got) == set(z)
    for k in z:
        for a, b in zip(floats(got[k]), z[k]):
            assert abs(a - b) <= 1e-5 * abs(b), k
    ref, conv = score(d, f"{d}/experts/red.safetensors"), score(d, str(out))
    assert conv["accuracy"] == ref["accuracy"]
    assert abs(conv["loglik"] - ref["loglik"]) < 1e-4


def test_npz_state_dict_identity_is_bit_exact(demo, tmp_path):
    d, red = demo
    n_layers = json.load(open(f"{d}/model/config.json"))["num_hidden_layers"]
    src = tmp_path / "code_expert.npz"
    with zipfile.ZipFile(src, "w") as zf:
        for i in range(3 * n_layers):  # state_dict order: layer-major, gate, up, down
            zf.writestr(f"learnable_params_module_list.{i}.npy",
                        write_npy(floats(red[ce.mlp_name(i)])))
    r = run_convert(str(src), "--out-dir", str(tmp_path), "--model", f"{d}/model",
                    "--transform", "identity", "--name", "code")
    assert r.returncode == 0, r.stderr
    got, meta = read_safetensors(tmp_path / "code.safetensors")
    assert meta["name"] == "code"
    assert got == red  # same bytes for every matrix
    assert score(d, str(tmp_path / "code.safetensors")) == score(d, f"{d}/experts/red.safetensors")


def test_errors_name_the_culprit(demo, tmp_path):
    d, red = demo
    z = {k: floats(v) for k, v in red.items()}
    key = sorted(z)[0]
    bad = dict(z)
    bad[key] = z[key][:-1]
    (tmp_path / "short.json").write_text(json.dumps(bad))
    r = run_convert(str(tmp_path / "short.json"), "--out-dir", str(tmp_path), "--model",
                    f"{d}/model", "--transform", "identity")
    assert r.returncode == 1 and key in r.stderr and "rank" in r.stderr
    del bad[key]
    (tmp_path / "missing.json").write_text(json.dumps(bad))
    r = run_convert(str(tmp_path / "missing.json"), "--out-dir", str(tmp_path), "--model",
                    f"{d}/model")
    assert r.returncode == 1 and key in r.stderr and "missing" in r.stderr
    (tmp_path / "sd.json").write_text(json.dumps({"learnable_params_module_list.0": [1.0]}))
    r = run_convert(str(tmp_path / "sd.json"), "--out-dir", str(tmp_path))
    assert r.returncode == 1 and "--model" in r.stderr
    (tmp_path / "policy.pt").write_bytes(b"not really")
    r = run_convert(str(tmp_path / "policy.pt"), "--out-dir", str(tmp_path))
    if importlib.util.find_spec("torch") is None:
        assert r.returncode == 1 and "torch" in r.stderr
    assert not (tmp_path / "short.safetensors").exists()
    # Without --model nothing is checked here; zmix then refuses a file that does not fit,
    # naming the key.
    ce.write_safetensors(str(tmp_path / "wrong.safetensors"), bad, {"name": "wrong"})
    r = subprocess.run([ZMIX, "score", "--model", f"{d}/model", "--experts",
                        str(tmp_path / "wrong.safetensors"), "--alpha", "1", "--examples",
                        f"{d}/task.tokens.json"], capture_output=True, text=True)
    assert r.returncode == 1 and key in r.stderr


def test_torch_reader_with_a_stand_in_module(monkeypatch, tmp_path):
    """PyTorch cannot be installed here: load_torch is exercised against a stand-in with the
    three tensor methods it uses, to check the dict handling around the torch call."""
    class Tensor:
        def __init__(self, v):
            self.v = v

        def detach(self):
            return self

        def float(self):
            return self

        def flatten(self):
            return self

        def tolist(self):
            return list(self.v)

    calls = []

    def load(path, map_location=None, weights_only=None):
        calls.append((path, map_location, weights_only))
        return {"model.layers.0.mlp.up_proj.weight": Tensor([0.0, 2.0])}

    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(load=load))
    params = ce.load_torch("x.pt")
    assert calls == [("x.pt", "cpu", True)]
    assert params == {"model.layers.0.mlp.up_proj.weight": [0.0, 2.0]}
    z = ce.transform(params["model.layers.0.mlp.up_proj.weight"], "sigmoid", 2.0)
    assert z[0] == pytest.approx(1.0) and z[1] == pytest.approx(2.0 / (1.0 + math.exp(-2.0)))
