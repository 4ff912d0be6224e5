#!/usr/bin/env python3
"""Convert SVF experts saved by the Transformer² reference implementation to zmix expert files.

zmix reads an expert as a safetensors file with one float32 vector per adapted matrix, keyed by
the matrix's Hugging Face name ("model.layers.3.mlp.gate_proj.weight") and of length
min(out, in) (docs/bring-your-own-model.md). The reference (SakanaAI/self-adaptive-llms)
saves each trained expert with torch.save, as either

  * a dict {HF matrix name: tensor p}            (its "learnable_params" files), or
  * a policy state_dict {"learnable_params_module_list.N": tensor p}, where N counts the
    model's MLP matrices in state_dict order: layer 0 gate, up, down, layer 1 gate, ...

where p are the raw policy parameters; the singular-value scales the expert was trained with
are z = sigmoid(p) * max_mult (--transform sigmoid, the default). --transform identity keeps
p as it is (for inputs that already hold z).

Inputs: .pt/.pth/.bin (needs PyTorch, which only load_torch touches), .npz (a zip of .npy
arrays, one per key) or .json ({key: [numbers]}, or {"params": {...}}). Only the standard
library is used otherwise, so the conversion runs and is tested where PyTorch is absent.

usage: convert_experts.py INPUT [INPUT ...] --out-dir DIR [--model HF_DIR]
                          [--transform sigmoid|identity] [--max-mult X] [--name NAME]
"""
import argparse
import ast
import json
import math
import os
import re
import struct
import sys
import zipfile

STATE_DICT_KEY = re.compile(r"^(?:.*\.)?learnable_params_module_list\.(\d+)$")
MLP_KINDS = ("gate_proj", "up_proj", "down_proj")


class ConvertError(Exception):
    """A problem with an input, named in the message."""


# ---- readers: each returns {key: [float, ...]} ---------------------------------------------


def load_torch(path):
    """The one place that needs PyTorch: reads a torch.save file of tensors."""
    try:
        import torch  # noqa: PLC0415 (optional dependency)
    except ImportError as e:
        raise ConvertError(f"{path}: reading PyTorch files needs the torch package ({e}); "
                           "convert it to .npz or .json where torch is installed") from e
    obj = torch.load(path, map_location="cpu", weights_only=True)
    if hasattr(obj, "state_dict") and not isinstance(obj, dict):
        obj = obj.state_dict()
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: expected a dict of tensors, found {type(obj).__name__}")
    return {str(k): [float(x) for x in v.detach().float().flatten().tolist()]
            for k, v in obj.items()}


NPY_DTYPES = {"<f4": ("<", "f", 4), "<f8": ("<", "d", 8), "<f2": ("<", "e", 2),
              ">f4": (">", "f", 4), ">f8": (">", "d", 8), ">f2": (">", "e", 2)}


def parse_npy(data, where):
    """A .npy array (format 1.0-3.0) of float16/32/64, flattened, as a list of floats."""
    if data[:6] != b"\x93NUMPY":
        raise ConvertError(f"{where}: not a .npy array")
    major = data[6]
    if major == 1:
        (hlen,), start = struct.unpack("<H", data[8:10]), 10
    elif major in (2, 3):
        (hlen,), start = struct.unpack("<I", data[8:12]), 12
    else:
        raise ConvertError(f"{where}: .npy version {major} is not supported")
    header = ast.literal_eval(data[start:start + hlen].decode("latin1"))
    descr = header.get("descr")
    if descr not in NPY_DTYPES:
        raise ConvertError(f"{where}: dtype {descr!r} is not a float type (f2, f4, f8)")
    if header.get("fortran_order"):
        raise ConvertError(f"{where}: Fortran-ordered arrays are not supported")
    count = math.prod(header.get("shape", ()))
    order, code, size = NPY_DTYPES[descr]
    body = data[start + hlen:]
    if len(body) < count * size:
        raise ConvertError(f"{where}: {len(body)} bytes of data, {count * size} expected")
    return list(struct.unpack(f"{order}{count}{code}", body[:count * size]))


def load_npz(path):
    out = {}
    try:
        with zipfile.ZipFile(path) as z:
            for name in z.namelist():
                if name.endswith(".npy"):
                    out[name[:-4]] = parse_npy(z.read(name), f"{path}: {name}")
    except zipfile.BadZipFile as e:
        raise ConvertError(f"{path}: not an .npz file ({e})") from e
    return out


def load_json(path):
    with open(path, encoding="utf-8") as f:
        try:
            obj = json.load(f)
        except json.JSONDecodeError as e:
            raise ConvertError(f"{path}: malformed JSON ({e})") from e
    if isinstance(obj, dict) and isinstance(obj.get("params"), dict):
        obj = obj["params"]
    if not isinstance(obj, dict):
        raise ConvertError(f"{path}: expected an object {{key: [numbers]}}")
    out = {}
    for k, v in obj.items():
        if not isinstance(v, list) or not all(isinstance(x, (int, float)) for x in v):
            raise ConvertError(f"{path}: key {k!r} is not a list of numbers")
        out[k] = [float(x) for x in v]
    return out


def load_params(path):
    ext = os.path.splitext(path)[1].lower()
    if ext in (".pt", ".pth", ".bin"):
        return load_torch(path)
    if ext == ".npz":
        return load_npz(path)
    if ext == ".json":
        return load_json(path)
    raise ConvertError(f"{path}: unknown input type {ext!r} (.pt/.pth/.bin, .npz or .json)")


# ---- naming, checking, transforming --------------------------------------------------------


def read_model_config(model_dir):
    """Layer count and MLP matrix rank of a Hugging Face LLaMA-family directory."""
    path = os.path.join(model_dir, "config.json")
    with open(path, encoding="utf-8") as f:
        cfg = json.load(f)
    try:
        return int(cfg["num_hidden_layers"]), min(int(cfg["hidden_size"]),
                                                  int(cfg["intermediate_size"]))
    except KeyError as e:
        raise ConvertError(f"{path}: field {e} is missing") from e


def mlp_name(index):
    layer, kind = divmod(index, 3)
    return f"model.layers.{layer}.mlp.{MLP_KINDS[kind]}.weight"


def hf_names(params, where):
    """Maps state_dict keys (learnable_params_module_list.N) to HF matrix names."""
    out = {}
    for k, v in params.items():
        m = STATE_DICT_KEY.match(k)
        name = mlp_name(int(m.group(1))) if m else k
        if name in out:
            raise ConvertError(f"{where}: {name!r} appears twice (key {k!r})")
        out[name] = v
    return out


def check_against_model(params, n_layers, rank, where):
    expected = {mlp_name(i) for i in range(3 * n_layers)}
    missing, extra = sorted(expected - params.keys()), sorted(params.keys() - expected)
    if missing:
        raise ConvertError(f"{where}: key {missing[0]!r} is missing ({len(missing)} of "
                           f"{len(expected)} MLP matrices absent)")
    if extra:
        raise ConvertError(f"{where}: key {extra[0]!r} is not an MLP matrix of the model")
    for k, v in params.items():
        if len(v) != rank:
            raise ConvertError(f"{where}: key {k!r} has {len(v)} values, the model's rank is "
                               f"{rank}")


def transform(values, how, max_mult):
    if how == "identity":
        return values
    out = []
    for p in values:  # a numerically safe logistic
        e = math.exp(-abs(p))
        out.append(max_mult * (1.0 / (1.0 + e) if p >= 0 else e / (1.0 + e)))
    return out


# ---- the writer ------------------------------------------------------------------------------


def write_safetensors(path, tensors, metadata):
    """One F32 vector per key, keys sorted, header padded to 8 bytes; atomic (temp + rename)."""
    header, blobs, offset = {}, [], 0
    for name in sorted(tensors):
        values = tensors[name]
        for i, x in enumerate(values):
            if not math.isfinite(x):
                raise ConvertError(f"{path}: key {name!r}: element {i} is {x}")
        blob = struct.pack(f"<{len(values)}f", *values)
        header[name] = {"dtype": "F32", "shape": [len(values)],
                        "data_offsets": [offset, offset + len(blob)]}
        blobs.append(blob)
        offset += len(blob)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for b in blobs:
            f.write(b)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def convert(path, out_dir, model_dir=None, how="sigmoid", max_mult=1.0, name=None):
    """Converts one input file; returns the path written."""
    raw = load_params(path)
    if not raw:
        raise ConvertError(f"{path}: no tensors found")
    if not model_dir and any(STATE_DICT_KEY.match(k) for k in raw):
        # The numbering is only meaningful against the model's layer count.
        raise ConvertError(f"{path}: state_dict keys (learnable_params_module_list.N) need "
                           "--model to be named and checked")
    params = hf_names(raw, path)
    if model_dir:
        n_layers, rank = read_model_config(model_dir)
        check_against_model(params, n_layers, rank, path)
    z = {k: transform(v, how, max_mult) for k, v in params.items()}
    stem = name or os.path.splitext(os.path.basename(path))[0]
    out = os.path.join(out_dir, f"{stem}.safetensors")
    meta = {"name": stem, "zmix.converted_from": os.path.basename(path),
            "zmix.transform": how if how == "identity" else f"sigmoid*{max_mult:g}"}
    write_safetensors(out, z, meta)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("inputs", nargs="+", metavar="INPUT")
    ap.add_argument("--out-dir", required=True)
    ap.add_argument("--model", help="Hugging Face model directory: names state_dict keys and "
                                    "checks every vector against the model")
    ap.add_argument("--transform", choices=("sigmoid", "identity"), default="sigmoid")
    ap.add_argument("--max-mult", type=float, default=1.0,
                    help="the reference policy's max_mult (sigmoid transform; default 1)")
    ap.add_argument("--name", help="expert name (one input only; default: the file's stem)")
    a = ap.parse_args(argv)
    if a.name and len(a.inputs) > 1:
        ap.error("--name needs exactly one INPUT")
    os.makedirs(a.out_dir, exist_ok=True)
    try:
        for path in a.inputs:
            print(convert(path, a.out_dir, a.model, a.transform, a.max_mult, a.name))
    except (ConvertError, OSError) as e:
        print(f"convert_experts: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
