#!/usr/bin/env python3
"""The reference external evaluator: scores zmix fleet chunks with PyTorch.

    python3 evaluator.py --redis redis://HOST:PORT[/DB] [--password-file FILE]
                         --model DIR --experts a.safetensors,b.safetensors[,...]
                         [--adapt mlp|attn|all] [--device cpu|cuda] [--consumer NAME]
                         [--claim-ms MS] [--threads N] [--memory-mb MB] [--log-level LEVEL]

It joins the consumer group of a fleet of zmixd daemons (docs/fleet.md) as one more scorer and
follows proto/FLEET.md to the letter: it reads chunks through the group, scores their rows
(mixing coefficients alpha, or z' vectors) on the chunk's example set with its own forward pass
of the base model, and answers with HSETNX / RPUSH / XACK as the daemons do. The model is a
Hugging Face llama-layout directory (config.json + model.safetensors, or a sharded index), the
experts the same SVF files, in the same order and with the same --adapt, as the daemons'. It
computes the model fingerprint and experts digest the way zmixd does (src/model/model.c,
src/adapt/provenance.c) and refuses to join a fleet whose identity differs, and answers a chunk
made for another model or expert set with a failure.

Scores agree with the daemons' within floating-point tolerance, not bit for bit (another
implementation, another summation order): see docs/fleet.md, "External evaluators".

Dependencies: Debian 12's python3-torch and python3-msgpack; Redis is spoken over a socket
(RESP2) by the small client below, so python3-redis is not needed.
"""

import argparse
import hashlib
import json
import math
import mmap
import os
import random
import signal
import socket
import struct
import sys
import threading
import time

import msgpack

try:
    import torch
except ImportError:  # named clearly: the one dependency a plain Python lacks
    sys.exit("evaluator.py: PyTorch is not installed (Debian: apt-get install python3-torch)")

FORMAT = 1  # proto/FLEET.md's message version
MARGIN_GOAL = 0.25  # ZMIX_MARGIN_GOAL (include/zmix/common.h)
MAX_CHOICES = 64  # ZMIX_MAX_CHOICES
MEMBER_TTL_S = 10
HEARTBEAT_S = 2.0
KEY_TTL_S = 86400
BLOCK_MS = 500

K_IDENTITY = "zmix:fleet:identity"
K_STREAM = "zmix:chunks"
K_GROUP = "zmix:scorers"
K_SCORED = "zmix:scored"
K_MEMBER = "zmix:member:"

MATRIX_SUFFIX = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
                 "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")
MLP_KINDS = (4, 5, 6)
ATTN_KINDS = (0, 1, 2, 3)


class InputError(Exception):
    """A file or setting this evaluator cannot use; the message names the file and field."""


class ChunkError(Exception):
    """A chunk that cannot be scored anywhere: answered with a failure result (§4)."""


class Stopping(Exception):
    """The evaluator is stopping mid-chunk: the chunk is left pending (§5, Stopping)."""


def log(level, msg):
    if LOG_LEVELS[level] >= LOG_LEVELS[ARGS_LOG_LEVEL[0]]:
        sys.stderr.write("%s evaluator %s: %s\n" % (time.strftime("%Y-%m-%dT%H:%M:%S"), level,
                                                    msg))
        sys.stderr.flush()


LOG_LEVELS = {"debug": 0, "info": 1, "warn": 2, "error": 3}
ARGS_LOG_LEVEL = ["info"]

# ---- safetensors ---------------------------------------------------------------------------

ST_DTYPES = {"F32": (torch.float32, 4), "F16": (torch.float16, 2), "BF16": (torch.bfloat16, 2)}


class SafeTensors:
    """One safetensors file, mapped; tensors are read as float32 on demand."""

    def __init__(self, path):
        self.path = path
        try:
            f = open(path, "rb")
        except OSError as e:
            raise InputError(f"{path}: {e.strerror}")
        with f:
            size = os.fstat(f.fileno()).st_size
            if size < 8:
                raise InputError(f"{path}: not a safetensors file (shorter than its header size)")
            n = struct.unpack("<Q", f.read(8))[0]
            if n > size - 8 or n > (100 << 20):
                raise InputError(f"{path}: header of {n} bytes does not fit a file of {size}")
            try:
                header = json.loads(f.read(n))
            except ValueError as e:
                raise InputError(f"{path}: the header is not JSON ({e})")
            if not isinstance(header, dict):
                raise InputError(f"{path}: the header is not a JSON object")
            self.map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) if size > 8 + n else b""
        self.base = 8 + n
        self.metadata = header.pop("__metadata__", None) or {}
        self.tensors = {}
        for name, t in header.items():
            if not isinstance(t, dict) or not {"dtype", "shape", "data_offsets"} <= set(t):
                raise InputError(f"{path}: tensor '{name}': not dtype/shape/data_offsets")
            begin, end = t["data_offsets"]
            if not (0 <= begin <= end and self.base + end <= size):
                raise InputError(f"{path}: tensor '{name}': data_offsets {t['data_offsets']} "
                                 f"outside the file")
            self.tensors[name] = t

    def has(self, name):
        return name in self.tensors

    def shape(self, name):
        return list(self.tensors[name]["shape"])

    def dtype(self, name):
        return self.tensors[name]["dtype"]

    def f32(self, name):
        """The tensor as a float32 CPU tensor (16-bit values widened exactly)."""
        t = self.tensors[name]
        if t["dtype"] not in ST_DTYPES:
            raise InputError(f"{self.path}: tensor '{name}': dtype {t['dtype']}, expected F32, "
                             f"F16 or BF16")
        dtype, width = ST_DTYPES[t["dtype"]]
        count = math.prod(t["shape"])
        begin, end = t["data_offsets"]
        if end - begin != count * width:
            raise InputError(f"{self.path}: tensor '{name}': {end - begin} bytes for shape "
                             f"{t['shape']} of {t['dtype']}")
        raw = bytes(self.map[self.base + begin:self.base + end]) if count else b""
        if not count:
            return torch.zeros(t["shape"], dtype=torch.float32)
        x = torch.frombuffer(bytearray(raw), dtype=dtype).reshape(t["shape"]).float()
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).flatten().nonzero()[0])
            raise InputError(f"{self.path}: tensor '{name}': element {bad} is "
                             f"{'NaN' if math.isnan(float(x.flatten()[bad])) else 'Inf'}")
        return x


# ---- The base model ------------------------------------------------------------------------

class Config:
    """config.json as zmixd reads it (src/model/json_config.c): the same defaults, the same
    refusals, and the same derived values (they are part of the model fingerprint)."""

    def __init__(self, path):
        try:
            with open(path) as f:
                root = json.load(f)
        except OSError as e:
            raise InputError(f"{path}: {e.strerror}")
        except ValueError as e:
            raise InputError(f"{path}: malformed JSON ({e})")
        if not isinstance(root, dict):
            raise InputError(f"{path}: top level is not a JSON object")
        self.path = path
        get = lambda k: root.get(k)  # null is absent, as in zmixd
        mt = get("model_type")
        if not isinstance(mt, str):
            raise InputError(f"{path}: field 'model_type' is missing or not a string")
        defaults = {"llama": 2048, "mistral": 4096 * 32, "qwen2": 32768}
        if mt not in defaults:
            raise InputError(f"{path}: model_type '{mt}' is not supported (llama, mistral, qwen2)")
        self.model_type = mt
        self.qkv_bias = 1 if mt == "qwen2" else 0
        act = get("hidden_act")
        if act is not None and act != "silu":
            raise InputError(f"{path}: field 'hidden_act' = {json.dumps(act)} is not supported "
                             f"(only \"silu\")")
        for k in ("attention_bias", "mlp_bias"):
            b = get(k)
            if b is not None and b is not False and not (self.qkv_bias and b is True):
                raise InputError(f"{path}: field '{k}' = {json.dumps(b)} is not supported")
        prf = get("partial_rotary_factor")
        if prf is not None and prf != 1:
            raise InputError(f"{path}: field 'partial_rotary_factor' = {prf} is not supported")
        if get("quantization_config") is not None:
            raise InputError(f"{path}: field 'quantization_config': quantised checkpoints are "
                             f"not supported")

        def integer(k, required=True, default=0):
            v = get(k)
            if v is None:
                if required:
                    raise InputError(f"{path}: field '{k}' is missing")
                return default
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v):
                raise InputError(f"{path}: field '{k}' is not an integer")
            return int(v)

        def number(k, default):
            v = get(k)
            if v is None:
                return default
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise InputError(f"{path}: field '{k}' is not a number")
            return float(v)

        def token_id(k):
            v = get(k)
            if isinstance(v, list):
                v = v[0] if v else None
            if v is None:
                return -1
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v != int(v) or v < 0:
                raise InputError(f"{path}: field '{k}' is not a token id")
            return int(v)

        self.dim = integer("hidden_size")
        self.hidden = integer("intermediate_size")
        self.n_layers = integer("num_hidden_layers")
        self.n_heads = integer("num_attention_heads")
        self.n_kv_heads = integer("num_key_value_heads", False, self.n_heads)
        self.vocab = integer("vocab_size")
        self.max_seq = integer("max_position_embeddings", False, defaults[mt])
        # zmixd keeps these two as C floats: the fingerprint prints the float32 values.
        self.eps = float(torch.tensor(number("rms_norm_eps", 1e-6), dtype=torch.float32))
        self.theta = float(torch.tensor(number("rope_theta", 10000.0), dtype=torch.float32))
        tied = get("tie_word_embeddings")
        if tied is not None and not isinstance(tied, bool):
            raise InputError(f"{path}: field 'tie_word_embeddings' is not true or false")
        self.tied = 1 if tied else 0
        self.bos = token_id("bos_token_id")
        self.eos = token_id("eos_token_id")
        if get("head_dim") is not None:
            self.head_dim = integer("head_dim")
        else:
            if self.n_heads <= 0 or self.dim % self.n_heads:
                raise InputError(f"{path}: num_attention_heads = {self.n_heads} does not divide "
                                 f"hidden_size = {self.dim} and head_dim is absent")
            self.head_dim = self.dim // self.n_heads
        # RoPE scaling: zmixd implements linear, dynamic, llama3 and yarn; this evaluator only
        # plain RoPE, and says so rather than score with other frequencies than the daemons.
        rs, rp = get("rope_scaling"), get("rope_parameters")
        for name, o in (("rope_scaling", rs), ("rope_parameters", rp)):
            if o is None:
                continue
            if not isinstance(o, dict):
                raise InputError(f"{path}: field '{name}' is not an object")
            kind = o.get("rope_type", o.get("type", "default"))
            if kind != "default":
                raise InputError(f"{path}: field '{name}.rope_type' = {json.dumps(kind)}: this "
                                 f"evaluator implements plain RoPE only")
            if name == "rope_parameters" and o.get("rope_theta") is not None:
                if get("rope_theta") is not None:
                    raise InputError(f"{path}: rope_theta is set both at the top level and in "
                                     f"rope_parameters")
                self.theta = float(torch.tensor(float(o["rope_theta"]), dtype=torch.float32))
        # Sliding windows: zmixd caps the usable context at the window (read_window).
        use_window = 1
        if self.qkv_bias:
            uw = get("use_sliding_window")
            use_window = 1 if uw is True else 0
        lt = get("layer_types")
        if lt is not None:
            if not isinstance(lt, list) or any(t not in ("full_attention", "sliding_attention")
                                               for t in lt):
                raise InputError(f"{path}: field 'layer_types' is not supported")
            use_window = 1 if "sliding_attention" in lt else 0
        window = integer("sliding_window", False, 0) if use_window else 0
        if 0 < window < self.max_seq:
            self.max_seq = window
        # zmixd's limits (src/model/loaders.h), so that both accept the same models.
        for k, v, hi in (("hidden_size", self.dim, 1 << 20),
                         ("intermediate_size", self.hidden, 1 << 20),
                         ("num_hidden_layers", self.n_layers, 4096),
                         ("num_attention_heads", self.n_heads, 4096),
                         ("num_key_value_heads", self.n_kv_heads, 4096),
                         ("head_dim", self.head_dim, 1 << 20), ("vocab_size", self.vocab, 1 << 24),
                         ("max_position_embeddings", self.max_seq, 1 << 24)):
            if v < 1 or v > hi:
                raise InputError(f"{path}: {k} = {v} is outside [1, {hi}]")
        if self.n_heads % self.n_kv_heads:
            raise InputError(f"{path}: n_kv_heads = {self.n_kv_heads} does not divide "
                             f"n_heads = {self.n_heads}")
        if self.head_dim % 2:
            raise InputError(f"{path}: head_dim = {self.head_dim} is odd")

    def fingerprint_text(self):
        """The canonical text zmix_model_compute_fingerprint hashes first (with its NUL)."""
        return ("zmix-model-v1 type=%s dim=%d hidden=%d layers=%d heads=%d kv=%d hd=%d "
                "vocab=%d seq=%d eps=%.9g theta=%.9g tied=%d interleaved=%d bias=%d bos=%d "
                "eos=%d" % (self.model_type, self.dim, self.hidden, self.n_layers, self.n_heads,
                            self.n_kv_heads, self.head_dim, self.vocab, self.max_seq, self.eps,
                            self.theta, self.tied, 0, self.qkv_bias, self.bos, self.eos))


class Model:
    """The weights of a Hugging Face directory as float32 tensors, and its zmix fingerprint."""

    def __init__(self, directory):
        self.dir = directory
        self.cfg = Config(os.path.join(directory, "config.json"))
        single = os.path.join(directory, "model.safetensors")
        index = os.path.join(directory, "model.safetensors.index.json")
        self.files = {}
        self.where = {}
        if os.path.exists(single):
            st = SafeTensors(single)
            self.files[single] = st
            self.where = {name: st for name in st.tensors}
        elif os.path.exists(index):
            try:
                with open(index) as f:
                    weight_map = json.load(f)["weight_map"]
            except (OSError, ValueError, KeyError, TypeError) as e:
                raise InputError(f"{index}: no readable 'weight_map' ({e})")
            for name, shard in weight_map.items():
                if not isinstance(shard, str) or "/" in shard or shard in (".", ".."):
                    raise InputError(f"{index}: weight_map['{name}'] is not a file name in the "
                                     f"directory")
                p = os.path.join(directory, shard)
                if p not in self.files:
                    self.files[p] = SafeTensors(p)
                self.where[name] = self.files[p]
        else:
            raise InputError(f"{directory}: neither model.safetensors nor "
                             f"model.safetensors.index.json")
        self.used = set()
        c = self.cfg
        q_dim, kv_dim = c.n_heads * c.head_dim, c.n_kv_heads * c.head_dim
        self.embed = self._load("model.embed_tokens.weight", [c.vocab, c.dim])
        shapes = ([q_dim, c.dim], [kv_dim, c.dim], [kv_dim, c.dim], [c.dim, q_dim],
                  [c.hidden, c.dim], [c.hidden, c.dim], [c.dim, c.hidden])
        self.layers = []
        for l in range(c.n_layers):
            L = {"W": [self._load(f"model.layers.{l}.{MATRIX_SUFFIX[k]}.weight", shapes[k])
                       for k in range(7)],
                 "attn_norm": self._load(f"model.layers.{l}.input_layernorm.weight", [c.dim]),
                 "ffn_norm": self._load(f"model.layers.{l}.post_attention_layernorm.weight",
                                        [c.dim]),
                 "bias": None}
            if c.qkv_bias:
                L["bias"] = [self._load(f"model.layers.{l}.self_attn.{p}_proj.bias", [d])
                             for p, d in (("q", q_dim), ("k", kv_dim), ("v", kv_dim))]
            self.layers.append(L)
        self.final_norm = self._load("model.norm.weight", [c.dim])
        if c.tied:
            self.lm_head = self.embed
            if "lm_head.weight" in self.where:
                head = self._load("lm_head.weight", [c.vocab, c.dim])
                if not torch.equal(head, self.embed):
                    raise InputError(f"{directory}: tie_word_embeddings is true but "
                                     f"lm_head.weight differs from model.embed_tokens.weight")
        else:
            self.lm_head = self._load("lm_head.weight", [c.vocab, c.dim])
        for name, st in self.where.items():
            if name not in self.used and not name.endswith("rotary_emb.inv_freq"):
                raise InputError(f"{st.path}: tensor '{name}' is not part of a {c.model_type} "
                                 f"model with this config.json")
        self.fingerprint = self._fingerprint()

    def _load(self, name, shape):
        st = self.where.get(name)
        if st is None or not st.has(name):
            raise InputError(f"{self.dir}: tensor '{name}' is missing")
        if st.shape(name) != shape:
            raise InputError(f"{st.path}: tensor '{name}': shape {st.shape(name)}, expected "
                             f"{shape} from config.json")
        self.used.add(name)
        return st.f32(name)

    def _fingerprint(self):
        # src/model/model.c: the text, its NUL, then every weight as float32 little-endian
        # bytes in a fixed order (whatever the file's dtype).
        h = hashlib.sha256()
        h.update(self.cfg.fingerprint_text().encode() + b"\0")
        le = lambda t: t.contiguous().numpy().astype("<f4", copy=False).tobytes()
        h.update(le(self.embed))
        for L in self.layers:
            h.update(le(L["attn_norm"]))
            for k in range(4):
                h.update(le(L["W"][k]))
            if L["bias"]:
                for b in L["bias"]:
                    h.update(le(b))
            h.update(le(L["ffn_norm"]))
            for k in range(4, 7):
                h.update(le(L["W"][k]))
        h.update(le(self.final_norm))
        if not self.cfg.tied:
            h.update(le(self.lm_head))
        return h.hexdigest()


def adapted_list(cfg, adapt):
    """(name, layer, kind, rank, offset) of every adapted matrix in zmixd's order
    (zmix_adapted_list: layer by layer, q k v o gate up down within a layer)."""
    kinds = {"mlp": MLP_KINDS, "attn": ATTN_KINDS, "all": ATTN_KINDS + MLP_KINDS}[adapt]
    q_dim, kv_dim = cfg.n_heads * cfg.head_dim, cfg.n_kv_heads * cfg.head_dim
    shapes = ((q_dim, cfg.dim), (kv_dim, cfg.dim), (kv_dim, cfg.dim), (cfg.dim, q_dim),
              (cfg.hidden, cfg.dim), (cfg.hidden, cfg.dim), (cfg.dim, cfg.hidden))
    out, offset = [], 0
    for l in range(cfg.n_layers):
        for k in range(7):
            if k not in kinds:
                continue
            rank = min(shapes[k])
            out.append((f"model.layers.{l}.{MATRIX_SUFFIX[k]}.weight", l, k, rank, offset))
            offset += rank
    return out, offset


def expert_name(path, st):
    # src/model/experts.c: __metadata__["name"] when set, else the file name without its
    # extension; kept in a char[128], so at most 127 bytes.
    meta = st.metadata.get("name")
    if isinstance(meta, str) and meta:
        name = meta.encode()
    else:
        base = os.path.basename(path)
        dot = base.rfind(".")
        name = (base[:dot] if dot > 0 else base).encode()
    return name[:127]


def load_experts(paths, adapted, z_total):
    names, zs = [], []
    listed = {a[0] for a in adapted}
    for path in paths:
        st = SafeTensors(path)
        z = torch.empty(z_total, dtype=torch.float32)
        for name, _, _, rank, off in adapted:
            if not st.has(name):
                raise InputError(f"{path}: key '{name}' is missing")
            if st.dtype(name) != "F32":
                raise InputError(f"{path}: key '{name}': dtype {st.dtype(name)}, expected F32")
            if st.shape(name) != [rank]:
                raise InputError(f"{path}: key '{name}': shape {st.shape(name)}, expected a "
                                 f"vector of {rank}")
            z[off:off + rank] = st.f32(name)
        for name in st.tensors:
            if name not in listed:
                raise InputError(f"{path}: key '{name}' is not an adapted matrix of this model "
                                 f"and adapt set")
        names.append(expert_name(path, st))
        zs.append(z)
    return names, torch.stack(zs) if zs else torch.empty(0, z_total)


def experts_digest(names, zs, adapt):
    # src/adapt/provenance.c, zmix_adapt_experts_digest: per expert its name with a NUL and
    # its z as float32 bytes, then the adapt set's name with a NUL.
    h = hashlib.sha256()
    for name, z in zip(names, zs):
        h.update(name + b"\0")
        h.update(z.numpy().astype("<f4", copy=False).tobytes())
    h.update(adapt.encode() + b"\0")
    return h.hexdigest()


# ---- Scoring -------------------------------------------------------------------------------

class Scorer:
    """The model on a device with the SVD of every adapted matrix; scores candidates."""

    def __init__(self, model, expert_paths, adapt, device, memory_mb, dtype=torch.float32,
                 svd_dtype=torch.float32):
        self.model, self.cfg, self.device, self.dtype = model, model.cfg, device, dtype
        self.adapted, self.z_total = adapted_list(model.cfg, adapt)
        self.expert_names, self.z = load_experts(expert_paths, self.adapted, self.z_total)
        self.digest = experts_digest(self.expert_names, self.z, adapt)
        self.K, self.M = len(expert_paths), len(self.adapted)
        self.memory = memory_mb << 20
        dev = lambda t: t.to(device=device, dtype=dtype)
        self.embed = dev(model.embed)
        self.lm_head = self.embed if model.cfg.tied else dev(model.lm_head)
        self.final_norm = dev(model.final_norm)
        self.layers = [{"W": [dev(w) for w in L["W"]], "attn_norm": dev(L["attn_norm"]),
                        "ffn_norm": dev(L["ffn_norm"]),
                        "bias": [dev(b) for b in L["bias"]] if L["bias"] else None}
                       for L in model.layers]
        # W = U diag(σ) Vᵀ, on the CPU whatever the device (so that a GPU evaluator has the
        # same factors). In float32 by default, as zmixd (LAPACK sgesdd, src/model/svd.c):
        # W′ inherits the rounding of the factors — singular vectors of close singular values
        # are only accurate to about eps·‖W‖/gap — so a float64 SVD, more exact, departs from
        # the daemons' scores thirty times more (docs/fleet.md, "External evaluators"). Signs of
        # singular pairs do not matter: W′ only ever uses U diag(·) Vᵀ.
        self.slot = {}  # (layer, kind) -> m
        self.U, self.S, self.Vt, self.sigma_sum = [], [], [], []
        for m, (name, l, k, rank, off) in enumerate(self.adapted):
            W = model.layers[l]["W"][k].to(svd_dtype)
            U, S, Vh = torch.linalg.svd(W, full_matrices=False)
            self.U.append(dev(U.contiguous()))
            self.S.append(S.double())  # float64
            self.Vt.append(dev(Vh.contiguous()))
            # zmixd: Σσ summed in double over the float32 σ, then rounded to float.
            self.sigma_sum.append(float(torch.tensor(S.float().double().sum().item(),
                                                     dtype=torch.float32)))
            self.slot[(l, k)] = m
        c = self.cfg
        half = c.head_dim // 2
        # The frequencies in float32, in zmixd's order of operations (kernels.c, rope_freq).
        i = torch.arange(half, dtype=torch.float32)
        inv = 1.0 / torch.pow(torch.tensor(c.theta, dtype=torch.float32), (2 * i) / c.head_dim)
        pos = torch.arange(c.max_seq, dtype=torch.float32)
        ang = pos[:, None] * inv[None, :]
        self.cos, self.sin = dev(torch.cos(ang)), dev(torch.sin(ang))

    # -- candidates ----------------------------------------------------------------------

    def prepare(self, kind, rows, per_layer, normalize, rescale):
        """All candidates at once: (live, per matrix (scale, base)) where live [n] is False for
        degenerate candidates (docs/scoring.md: α or z′ not finite, α of a matrix summing to
        0 under normalize, Σσ⊙z′ = 0 under rescale), scale [n, r] (float64) is c·σ⊙z′, the
        scaling of the singular directions, and base [n] is True where z′ is exactly 1 (the
        unadapted matrix itself, c = 1, as zmixd)."""
        n = rows.shape[0]
        live = torch.isfinite(rows).all(dim=1)
        safe = torch.where(torch.isfinite(rows), rows, torch.zeros_like(rows))
        out = []
        for m, (name, l, k, rank, off) in enumerate(self.adapted):
            if kind == "alpha":
                a = safe[:, m * self.K:(m + 1) * self.K] if per_layer else safe[:, :self.K]
                if normalize:
                    s = a.sum(dim=1)  # float32, as zmix_alpha_for_matrix
                    live &= (s != 0) & torch.isfinite(s)
                    a = a / torch.where(s != 0, s, torch.ones_like(s))[:, None]
                zm = (a.double() @ self.z[:, off:off + rank].double()).float()
            else:
                zm = safe[:, off:off + rank]
            live &= torch.isfinite(zm).all(dim=1)
            base = (zm == 1.0).all(dim=1)
            zd = zm.double()
            c = torch.ones(n, dtype=torch.float64)
            if rescale:
                denom = (self.S[m][None, :] * zd).sum(dim=1)
                c = self.sigma_sum[m] / denom
                live &= (denom != 0) & torch.isfinite(c) | base
            scale = c[:, None] * self.S[m][None, :] * zd
            scale[base] = self.S[m]
            out.append((scale, base))
        return live, out

    # -- examples --------------------------------------------------------------------------

    def layout(self, examples):
        """Teacher-forced sequences and the rows that are scored. Exact match: prompt ‖
        target[:-1], its last |target| rows predict the target. Multiple choice: one sequence
        per choice, prompt ‖ choice[:-1], the same way (zmixd shares the prompt's pass between
        branches; the values are those of separate sequences)."""
        seqs, row_seq, row_pos, row_tok, row_group = [], [], [], [], []
        groups = []  # per example: exact match -> [group]; choice -> [group per choice]
        g = 0
        for e in examples:
            conts = [e["target"]] if "target" in e else e["choices"]
            ids = []
            for cont in conts:
                s = len(seqs)
                seqs.append(e["prompt"] + cont[:-1])
                p0 = len(e["prompt"]) - 1
                for j, t in enumerate(cont):
                    row_seq.append(s)
                    row_pos.append(p0 + j)
                    row_tok.append(t)
                    row_group.append(g)
                ids.append(g)
                g += 1
            groups.append(ids)
        return seqs, row_seq, row_pos, row_tok, row_group, groups, g

    # -- forward ---------------------------------------------------------------------------

    @staticmethod
    def rmsnorm(x, w, eps):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * w

    def linear(self, x, l, k, scales):
        """x [G, N, cols] through matrix k of layer l for G candidates: the base matrix, or
        c·U diag(σ⊙z′) Vᵀ applied in factored form (one GEMM by Vᵀ for all candidates, a
        per-candidate scaling, one GEMM by U)."""
        m = self.slot.get((l, k))
        G, N, cols = x.shape
        x2 = x.reshape(G * N, cols)  # one 2-D GEMM: far faster than a batched one here
        if m is None or scales[m] is None:
            return (x2 @ self.layers[l]["W"][k].T).view(G, N, -1)
        t = (x2 @ self.Vt[m].T).view(G, N, -1) * scales[m][:, None, :]
        return (t.view(G * N, -1) @ self.U[m].T).view(G, N, -1)

    def forward_rows(self, tokens, G, row_seq, row_pos, scales, stop):
        """Logits of the scored rows [G, T, vocab] for G candidates. tokens [S, L] (right
        padded: causal attention never lets a real row see a padding row)."""
        c = self.cfg
        S, L = tokens.shape
        H, KV, hd = c.n_heads, c.n_kv_heads, c.head_dim
        x = self.embed[tokens].reshape(1, S * L, c.dim).expand(G, S * L, c.dim).contiguous()
        cos, sin = self.cos[:L], self.sin[:L]
        mask = torch.full((L, L), float("-inf"), device=self.device, dtype=self.dtype).triu(1)
        scale = 1.0 / math.sqrt(hd)
        half = hd // 2

        def rope(t):  # [B, heads, L, hd], HF pairing (j, j + hd/2)
            a, b = t[..., :half], t[..., half:]
            return torch.cat((a * cos - b * sin, a * sin + b * cos), dim=-1)

        for l, Lw in enumerate(self.layers):
            if stop():
                raise Stopping()
            h = self.rmsnorm(x, Lw["attn_norm"], c.eps)
            q, k, v = (self.linear(h, l, i, scales) for i in range(3))
            if Lw["bias"]:
                q, k, v = q + Lw["bias"][0], k + Lw["bias"][1], v + Lw["bias"][2]
            q = q.reshape(G * S, L, H, hd).transpose(1, 2)
            k = k.reshape(G * S, L, KV, hd).transpose(1, 2)
            v = v.reshape(G * S, L, KV, hd).transpose(1, 2)
            q, k = rope(q), rope(k)
            if H != KV:  # grouped-query attention: query head h reads kv head h // (H/KV)
                k = k.repeat_interleave(H // KV, dim=1)
                v = v.repeat_interleave(H // KV, dim=1)
            att = torch.softmax((q @ k.transpose(-1, -2)) * scale + mask, dim=-1) @ v
            att = att.transpose(1, 2).reshape(G, S * L, H * hd)
            x = x + self.linear(att, l, 3, scales)
            h = self.rmsnorm(x, Lw["ffn_norm"], c.eps)
            act = torch.nn.functional.silu(self.linear(h, l, 4, scales)) * \
                self.linear(h, l, 5, scales)
            x = x + self.linear(act, l, 6, scales)
        at = torch.tensor([s * L + p for s, p in zip(row_seq, row_pos)], device=self.device)
        h = self.rmsnorm(x[:, at, :], self.final_norm, c.eps)
        return h @ self.lm_head.T

    # -- one chunk -------------------------------------------------------------------------

    def score(self, kind, rows, per_layer, normalize, rescale, choice_norm, examples, stop):
        """Scores of the n candidates: [(accuracy, loglik, margin)] in row order."""
        n = rows.shape[0]
        ok, prepared = self.prepare(kind, rows, per_layer, normalize, rescale)
        nan = (float("nan"),) * 3
        results = [nan] * n
        seqs, row_seq, row_pos, row_tok, row_group, groups, n_groups = self.layout(examples)
        L = max(len(s) for s in seqs)
        tokens = torch.zeros((len(seqs), L), dtype=torch.long)
        for i, s in enumerate(seqs):
            tokens[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        tokens = tokens.to(self.device)
        tok = torch.tensor(row_tok, device=self.device)
        grp = torch.tensor(row_group, device=self.device)
        T = len(row_tok)
        choice = "choices" in examples[0]
        # Candidates per forward pass: the activations of one candidate (the widest map's
        # output over every row, a few times over, the attention scores, the logits in
        # float64) within the memory budget.
        c = self.cfg
        width = max(c.dim, c.hidden, c.n_heads * c.head_dim) * 6 + c.n_heads * L
        per_cand = 4 * len(seqs) * L * width + 12 * T * c.vocab
        G = max(1, min(n, self.memory // max(per_cand, 1)))
        live = [i for i in range(n) if bool(ok[i])]
        for start in range(0, len(live), G):
            idx = live[start:start + G]
            g = len(idx)
            scales = []
            for scale, base in prepared:
                if bool(base[idx].all()):
                    scales.append(None)  # the base matrix for every candidate of the pass
                else:
                    scales.append(scale[idx].to(device=self.device, dtype=self.dtype))
            with torch.no_grad():
                logits = self.forward_rows(tokens, g, row_seq, row_pos, scales, stop)
                lg = logits.double()  # [g, T, V]
                lt = lg.gather(2, tok.expand(g, T)[:, :, None])[:, :, 0]
                mx = lg.max(dim=2).values
                lse = mx + torch.log(torch.exp(lg - mx[:, :, None]).sum(dim=2))
                logp = lt - lse
                hit = (lg.argmax(dim=2) == tok).double()  # argmax: the first maximum
                # The target's lead over the best other token (src/model/score.c).
                others = lg.scatter(2, tok.expand(g, T)[:, :, None], float("-inf"))
                lead = lt - others.max(dim=2).values
                short = torch.clamp(lead - MARGIN_GOAL, max=0.0)
                count = torch.zeros(n_groups, dtype=torch.float64, device=self.device)
                count.index_add_(0, grp, torch.ones(T, dtype=torch.float64, device=self.device))
                zeros = torch.zeros((g, n_groups), dtype=torch.float64, device=self.device)
                sum_logp = zeros.index_add(1, grp, logp)
                misses = zeros.index_add(1, grp, 1.0 - hit)
                sum_short = zeros.index_add(1, grp, short)
                sum_logp, misses, sum_short, count = (t.cpu() for t in (sum_logp, misses,
                                                                        sum_short, count))
            E = len(examples)
            for j, i in enumerate(idx):
                acc = ll = mg = 0.0
                for e, ids in enumerate(groups):
                    if not choice:
                        gi = ids[0]
                        acc += float(misses[j, gi]) == 0.0
                        ll += float(sum_logp[j, gi]) / float(count[gi])
                        mg += float(sum_short[j, gi]) / float(count[gi])
                        continue
                    vals = [float(sum_logp[j, gi]) / (float(count[gi]) if choice_norm ==
                                                      "per_token" else 1.0) for gi in ids]
                    ans = examples[e]["answer"]
                    other = max(v for ci, v in enumerate(vals) if ci != ans)
                    margin = vals[ans] - other
                    acc += margin > 0.0  # a tie is wrong
                    ll += margin
                    mg += margin - MARGIN_GOAL if margin < MARGIN_GOAL else 0.0
                results[i] = (float(acc) / E, ll / E, mg / E)
        return results


def check_examples(doc, cfg):
    """The example set of §2, checked as zmix_examples_check does; ChunkError naming the
    example and field otherwise."""
    if not isinstance(doc, dict) or doc.get("v") != FORMAT:
        raise ChunkError("example set: not a version %d message" % FORMAT)
    ex = doc.get("examples")
    if not isinstance(ex, list) or not ex:
        raise ChunkError("example set: 'examples' is missing or empty")

    def ids(v, where):
        if not isinstance(v, list) or not v:
            raise ChunkError(f"{where} is empty or not a list of token ids")
        for t in v:
            if isinstance(t, bool) or not isinstance(t, int) or t < 0:
                raise ChunkError(f"{where}: {t!r} is not a token id")
            if t >= cfg.vocab:
                raise ChunkError(f"{where}: token id {t} is outside the vocabulary "
                                 f"[0, {cfg.vocab})")
        return v

    choice = isinstance(ex[0], dict) and "choices" in ex[0]
    for i, e in enumerate(ex):
        if not isinstance(e, dict):
            raise ChunkError(f"examples[{i}] is not a map")
        ids(e.get("prompt"), f"examples[{i}].prompt")
        if "choices" in e and "target" in e:
            raise ChunkError(f"examples[{i}] has both a target and choices")
        if ("choices" in e) != choice:
            raise ChunkError(f"examples[{i}]: examples[0] is "
                             f"{'multiple-choice' if choice else 'exact-match'}, and a set is "
                             f"all one kind")
        if choice:
            ch = e["choices"]
            if not isinstance(ch, list) or not 2 <= len(ch) <= MAX_CHOICES:
                raise ChunkError(f"examples[{i}].choices: expected 2 to {MAX_CHOICES} choices")
            for c, cont in enumerate(ch):
                ids(cont, f"examples[{i}].choices[{c}]")
            a = e.get("answer")
            if isinstance(a, bool) or not isinstance(a, int) or not 0 <= a < len(ch):
                raise ChunkError(f"examples[{i}].answer: {a!r} is not the index of a choice")
            longest = max(len(c) for c in ch)
        else:
            ids(e.get("target"), f"examples[{i}].target")
            longest = len(e["target"])
        if len(e["prompt"]) + longest - 1 > cfg.max_seq:
            raise ChunkError(f"examples[{i}]: the model reads {len(e['prompt']) + longest - 1} "
                             f"tokens of it, over its context of {cfg.max_seq}")
    return ex


# ---- Redis (RESP2 over a socket) -----------------------------------------------------------

class RedisReplyError(Exception):
    """An error reply from Redis (-ERR ...)."""


def parse_url(url):
    """redis://HOST[:PORT][/DB] as zmixd reads --store; credentials in the URL are refused."""
    if not url.startswith("redis://"):
        raise InputError(f"--redis {url}: expected redis://HOST:PORT[/DB]")
    rest = url[len("redis://"):]
    hostport, _, db = rest.partition("/")
    if "@" in hostport:
        raise InputError("--redis: a URL with credentials is refused (a command line is visible "
                         "to every user); give the password with --password-file")
    if hostport.startswith("["):
        host, _, tail = hostport[1:].partition("]")
        port = tail[1:] if tail.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    try:
        port = int(port) if port else 6379
        db = int(db) if db else 0
    except ValueError:
        raise InputError(f"--redis {url}: port and database must be numbers")
    if not host or not 1 <= port <= 65535 or db < 0:
        raise InputError(f"--redis {url}: expected redis://HOST:PORT[/DB], port 1..65535")
    return host, port, db


class Redis:
    def __init__(self, host, port, db, password):
        self.host, self.port, self.db, self.password = host, port, db, password
        self.sock = None

    def connect(self):
        self.close()
        s = socket.create_connection((self.host, self.port), timeout=10)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock, self.f = s, s.makefile("rb")
        if self.password is not None:
            self.command("AUTH", self.password)
        if self.db:
            self.command("SELECT", self.db)

    def close(self):
        if self.sock:
            try:
                self.sock.close()
            except OSError:
                pass
        self.sock = None

    def command(self, *args):
        return self.pipeline([args])[0]

    def pipeline(self, commands):
        """Sends the commands in one write and reads their replies: one round trip. An error
        reply is raised after every reply was read (the connection stays in step)."""
        if self.sock is None:
            raise ConnectionError("not connected")
        out = []
        for args in commands:
            out.append(b"*%d\r\n" % len(args))
            for a in args:
                a = a if isinstance(a, bytes) else str(a).encode()
                out.append(b"$%d\r\n%s\r\n" % (len(a), a))
        replies, error = [], None
        try:
            self.sock.sendall(b"".join(out))
            for _ in commands:
                try:
                    replies.append(self._read())
                except RedisReplyError as e:
                    error = error or e
                    replies.append(None)
        except (OSError, ValueError) as e:
            self.close()
            raise ConnectionError(str(e) or "connection lost")
        if error:
            raise error
        return replies

    def _read(self):
        line = self.f.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("connection closed by Redis")
        kind, rest = line[:1], line[1:-2]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RedisReplyError(rest.decode(errors="replace"))
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = self.f.read(n + 2)
            if len(data) != n + 2:
                raise ConnectionError("connection closed by Redis")
            return data[:-2]
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read() for _ in range(n)]
        raise ConnectionError(f"unexpected reply {line[:40]!r}")


# ---- The evaluator -------------------------------------------------------------------------

class Evaluator:
    def __init__(self, args, scorer, password):
        self.args, self.scorer = args, scorer
        self.host, self.port, self.db = parse_url(args.redis)
        self.password = password
        host = socket.gethostname().replace(":", "_").replace(" ", "_")[:48] or "host"
        # HOST-PID-RANDOM, as a daemon's member id (proto/FLEET.md §1): what results and
        # zmix:scored name this evaluator by.
        self.member = "%s-%d-%08x" % (host, os.getpid(), random.SystemRandom().getrandbits(32))
        self.consumer = args.consumer or self.member + "/0"
        self.identity = f"{scorer.model.fingerprint} {scorer.digest}"
        self.stopping = threading.Event()
        self.examples_key, self.examples = None, None
        self.scored = 0

    def redis(self):
        r = Redis(self.host, self.port, self.db, self.password)
        try:
            r.connect()
        except OSError as e:
            raise ConnectionError(f"cannot connect to Redis at {self.host}:{self.port}: "
                                  f"{e.strerror or e}")
        except RedisReplyError as e:
            if "NOAUTH" in str(e) or "WRONGPASS" in str(e) or "invalid password" in str(e):
                raise InputError(f"Redis refused the password from --password-file: {e}")
            raise
        return r

    def join(self):
        """§6: the fleet's identity must be ours; the group exists; we are a member."""
        r = self.redis()
        try:
            try:
                r.command("PING")
            except RedisReplyError as e:
                if str(e).startswith("NOAUTH"):
                    raise InputError("Redis requires a password: give it with --password-file")
                raise
            r.command("SET", K_IDENTITY, self.identity, "NX")
            have = (r.command("GET", K_IDENTITY) or b"").decode(errors="replace").split()
            if len(have) != 2:
                raise InputError(f"{K_IDENTITY} is not 'MODEL EXPERTS' (two SHA-256 digests)")
            mine = self.identity.split()
            model_differs, experts_differ = have[0] != mine[0], have[1] != mine[1]
            if model_differs and experts_differ:
                what = (f"both differ: base model {mine[0][:16]} (the fleet's {have[0][:16]}) "
                        f"and experts {mine[1][:16]} (the fleet's {have[1][:16]})")
            elif model_differs:
                what = f"the base model differs: {mine[0][:16]}, the fleet's is {have[0][:16]}"
            elif experts_differ:
                what = (f"the experts differ: digest {mine[1][:16]}, the fleet's is "
                        f"{have[1][:16]} (the expert files, their order and --adapt must be the "
                        f"same on every member)")
            else:
                what = None
            if what:
                raise InputError(f"--redis {self.args.redis}: this evaluator cannot join the "
                                 f"fleet: {what}")
            self.create_group(r)
            self.heartbeat(r)
        finally:
            r.close()
        log("info", f"joined {self.args.redis} as member {self.member}, consumer "
                    f"{self.consumer} (model {self.scorer.model.fingerprint[:16]}, experts "
                    f"{self.scorer.digest[:16]}, device {self.args.device})")

    @staticmethod
    def create_group(r):
        try:
            r.command("XGROUP", "CREATE", K_STREAM, K_GROUP, "0", "MKSTREAM")
        except RedisReplyError as e:
            if not str(e).startswith("BUSYGROUP"):
                raise

    def heartbeat(self, r):
        r.command("SET", K_MEMBER + self.member, self.args.redis, "EX", MEMBER_TTL_S)
        r.command("HSET", K_MEMBER + self.member + ":info", "pid", os.getpid(), "scorers", 1)
        r.command("EXPIRE", K_MEMBER + self.member + ":info", MEMBER_TTL_S)
        # A Redis that lost its data lost the identity too: members record it again.
        r.command("SET", K_IDENTITY, self.identity, "NX")

    def heartbeat_main(self):
        """Its own connection, so that a long chunk does not let the member key expire."""
        r = None
        while not self.stopping.wait(HEARTBEAT_S):
            try:
                if r is None or r.sock is None:
                    r = self.redis()
                self.heartbeat(r)
            except (ConnectionError, RedisReplyError, InputError) as e:
                log("warn", f"heartbeat: {e}")
                if r:
                    r.close()
                r = None
        if r is None:
            try:
                r = self.redis()
            except Exception:
                return
        try:  # leaving: off the member list at once
            r.command("DEL", K_MEMBER + self.member, K_MEMBER + self.member + ":info")
        except Exception:
            pass
        r.close()

    def run(self):
        hb = threading.Thread(target=self.heartbeat_main, daemon=True)
        hb.start()
        r = None
        claim_ms = self.args.claim_ms
        claim_every = max(claim_ms / 4000.0, 0.1)
        last_claim = 0.0
        while not self.stopping.is_set():
            try:
                if r is None or r.sock is None:
                    r = self.redis()
                entries = []
                now = time.monotonic()
                if now - last_claim >= claim_every:
                    last_claim = now
                    # §5, Taking over: a chunk pending too long on a consumer that died.
                    reply = r.command("XAUTOCLAIM", K_STREAM, K_GROUP, self.consumer, claim_ms,
                                      "0-0", "COUNT", 1)
                    entries = [e for e in (reply[1] if reply and len(reply) > 1 else []) if e]
                    if entries:
                        log("info", f"took over a chunk pending for more than {claim_ms} ms")
                        last_claim = 0.0
                if not entries:
                    reply = r.command("XREADGROUP", "GROUP", K_GROUP, self.consumer, "COUNT", 1,
                                      "BLOCK", BLOCK_MS, "STREAMS", K_STREAM, ">")
                    entries = reply[0][1] if reply else []
                for entry in entries:
                    if self.stopping.is_set():
                        break
                    self.process(r, entry)
            except (ConnectionError, InputError) as e:
                log("warn", f"Redis connection lost: {e}; reconnecting")
                if r:
                    r.close()
                r = None
                self.stopping.wait(1.0)
            except RedisReplyError as e:
                if str(e).startswith("NOGROUP"):  # Redis lost its data: the group again
                    try:
                        self.create_group(r)
                    except (ConnectionError, RedisReplyError):
                        pass
                else:
                    log("warn", f"Redis: {e}")
                    self.stopping.wait(1.0)
        if r:
            r.close()
        hb.join(timeout=5)

    # -- one stream entry (§5) -------------------------------------------------------------

    def process(self, r, entry):
        entry_id, fields = entry[0], entry[1]
        if fields is None:  # deleted while pending (XAUTOCLAIM on Redis 6.2)
            self.ack(r, entry_id)
            return
        data = None
        for i in range(0, len(fields) - 1, 2):
            if fields[i] == b"chunk":
                data = fields[i + 1]
        try:
            chunk = msgpack.unpackb(data, raw=False) if data is not None else None
        except Exception:
            chunk = None
        where = {}
        if isinstance(chunk, dict):
            where = {k: chunk.get(k) for k in ("id", "results", "field", "done")}
        answerable = all(isinstance(v, str) and v for v in where.values()) and len(where) == 4
        try:
            ch = self.decode(chunk)
        except ChunkError as e:
            log("warn", f"stream entry {entry_id.decode()}: {e}")
            if answerable:
                self.answer(r, where, entry_id, error=f"unreadable chunk: {e}")
            else:
                self.ack(r, entry_id)
            return
        # Settled: a step nobody waits for, or a chunk already answered.
        if r.command("EXISTS", ch["step_key"]) != 1 or \
                r.command("HEXISTS", ch["results"], ch["field"]) == 1:
            self.ack(r, entry_id)
            return
        t0 = time.monotonic()
        try:
            scores = self.score(r, ch)
            error = None
        except Stopping:
            return  # left pending: taken over after the claim time
        except ChunkError as e:
            scores, error = None, str(e)
        except MemoryError as e:
            scores, error = None, f"out of memory on {self.args.device}: {e}"
        except RuntimeError as e:  # torch's own errors, CUDA out of memory among them
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            scores, error = None, f"evaluator.py on {self.args.device}: {first}"
        seconds = time.monotonic() - t0
        won = self.answer(r, ch, entry_id, scores=scores, error=error, seconds=seconds)
        if error:
            log("warn", f"chunk {ch['id']} (job {ch['job']}) failed: {error}")
        log("debug", f"chunk {ch['id']}: {ch['n']} candidates in {seconds:.3f} s"
                     f"{'' if won else ' (another member answered first)'}")

    def decode(self, c):
        """A chunk message (§3), checked field by field."""
        if not isinstance(c, dict):
            raise ChunkError("chunk: not a MessagePack map")

        def s(k):
            v = c.get(k)
            if not isinstance(v, str):
                raise ChunkError(f"chunk: '{k}' missing or not a string")
            return v

        def i(k, lo, hi):
            v = c.get(k)
            if isinstance(v, bool):
                v = int(v)
            if not isinstance(v, int):
                raise ChunkError(f"chunk: '{k}' missing or not an integer")
            if not lo <= v <= hi:
                raise ChunkError(f"chunk: '{k}' is {v}, expected {lo}..{hi}")
            return v

        for k in ("id", "results", "field", "done"):
            s(k)
        v = i("v", 0, 2 ** 31 - 1)
        if v != FORMAT:
            raise ChunkError(f"chunk: format {v}, this evaluator reads {FORMAT}")
        ch = {k: s(k) for k in ("id", "results", "field", "done", "step_key",
                                "model_fingerprint", "experts_digest", "examples", "kind",
                                "choice_norm")}
        ch["job"] = i("job", 0, 2 ** 63 - 1)
        ch["n"] = i("n", 1, 1 << 20)
        ch["dim"] = i("dim", 1, 1 << 30)
        for k in ("per_layer", "normalize", "rescale"):
            ch[k] = i(k, 0, 1)
        if ch["kind"] not in ("alpha", "z"):
            raise ChunkError(f"chunk: 'kind' is '{ch['kind']}', expected alpha or z")
        if ch["choice_norm"] not in ("per_token", "sum"):
            raise ChunkError(f"chunk: 'choice_norm' is '{ch['choice_norm']}', expected "
                             f"per_token or sum")
        rows = c.get("rows")
        count = ch["n"] * ch["dim"]
        if not isinstance(rows, bytes) or len(rows) != 4 * count:
            raise ChunkError(f"chunk: 'rows' is not n·dim = {count} float32 values")
        ch["rows"] = torch.frombuffer(bytearray(rows), dtype=torch.float32).reshape(
            ch["n"], ch["dim"]) if sys.byteorder == "little" else torch.tensor(
            struct.unpack("<%df" % count, rows)).reshape(ch["n"], ch["dim"])
        return ch

    def score(self, r, ch):
        sc = self.scorer
        if ch["model_fingerprint"] != sc.model.fingerprint:
            raise ChunkError(f"chunk for base model {ch['model_fingerprint'][:16]}, this "
                             f"evaluator has {sc.model.fingerprint[:16]}")
        if ch["experts_digest"] != sc.digest:
            raise ChunkError(f"chunk for experts digest {ch['experts_digest'][:16]}, this "
                             f"evaluator has {sc.digest[:16]}")
        want = sc.z_total if ch["kind"] == "z" else sc.K * sc.M if ch["per_layer"] else sc.K
        if ch["dim"] != want:
            raise ChunkError(f"chunk rows of {ch['dim']} values, expected {want}")
        if self.examples_key != ch["examples"]:  # a step's chunks share one set: keep it
            raw = r.command("GET", ch["examples"])
            if raw is None:
                raise ChunkError(f"examples {ch['examples']}: not in Redis (expired, or never "
                                 f"written)")
            try:
                doc = msgpack.unpackb(raw, raw=False)
            except Exception as e:
                raise ChunkError(f"examples {ch['examples']}: not MessagePack ({e})")
            self.examples = check_examples(doc, sc.cfg)
            self.examples_key = ch["examples"]
        res = sc.score(ch["kind"], ch["rows"], ch["per_layer"], ch["normalize"], ch["rescale"],
                       ch["choice_norm"], self.examples, self.stopping.is_set)
        return [{"accuracy": float(a), "loglik": float(l), "margin": float(m)}
                for a, l, m in res]

    def answer(self, r, ch, entry_id, scores=None, error=None, seconds=0.0):
        """§4–§5: the result (first wins), the driver's wake-up when ours won, the ack."""
        msg = {"v": FORMAT, "id": ch["id"], "member": self.member}
        if error is None:
            msg.update(ok=True, seconds=float(seconds), scores=scores)
        else:
            msg.update(ok=False, error=error or "failed")
        won = r.command("HSETNX", ch["results"], ch["field"],
                        msgpack.packb(msg, use_bin_type=True)) == 1
        # The rest in one round trip, the acknowledgement last (as the daemons do): a scorer
        # that dies before it leaves the chunk pending, to be taken over and settled.
        rest = [("EXPIRE", ch["results"], KEY_TTL_S), ("RPUSH", ch["done"], ch["id"]),
                ("EXPIRE", ch["done"], KEY_TTL_S), ("HINCRBY", K_SCORED, self.member, 1)]
        r.pipeline((rest if won else []) + [("XACK", K_STREAM, K_GROUP, entry_id),
                                             ("XDEL", K_STREAM, entry_id)])
        self.scored += won
        return won

    @staticmethod
    def ack(r, entry_id):
        r.pipeline([("XACK", K_STREAM, K_GROUP, entry_id), ("XDEL", K_STREAM, entry_id)])


def read_password(path):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise InputError(f"--password-file {path}: {e.strerror}")
    if os.stat(path).st_mode & 0o077:
        log("warn", f"--password-file {path} is readable by other users")
    return data.rstrip(b"\r\n")


def main(argv=None):
    p = argparse.ArgumentParser(
        description="Reference external evaluator for a zmix fleet (proto/FLEET.md), on PyTorch.")
    p.add_argument("--redis", required=True, help="redis://HOST[:PORT][/DB] of the fleet")
    p.add_argument("--password-file", help="the Redis password (the whole file less trailing "
                                           "newlines)")
    p.add_argument("--model", required=True, help="Hugging Face model directory (config.json + "
                                                  "model.safetensors)")
    p.add_argument("--experts", required=True,
                   help="expert safetensors files, comma-separated, in the daemons' order")
    p.add_argument("--adapt", default="mlp", choices=("mlp", "attn", "all"),
                   help="the adapted matrices, as zmixd's --adapt (default mlp)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    p.add_argument("--consumer", help="consumer name in the group (default MEMBER/0), unique "
                                      "in the fleet")
    p.add_argument("--claim-ms", type=int, default=30000,
                   help="take over chunks pending longer than this (the fleet's "
                        "--fleet-claim-ms; default 30000)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: its "
                                                          "default)")
    p.add_argument("--memory-mb", type=int, default=512,
                   help="activations of one forward pass at most (candidates are batched "
                        "within it; default 512)")
    p.add_argument("--dtype", default="float32", choices=("float32", "float64"),
                   help="precision of the forward pass (float64: a slower, more exact "
                        "reference; default float32, as zmixd)")
    p.add_argument("--svd-dtype", default="float32", choices=("float32", "float64"),
                   help="precision of the SVD of the adapted matrices (default float32, as "
                        "zmixd: the closest scores to the daemons')")
    p.add_argument("--log-level", default="info", choices=tuple(LOG_LEVELS))
    p.add_argument("--print-identity", action="store_true",
                   help="print the model fingerprint and experts digest, and exit")
    args = p.parse_args(argv)
    ARGS_LOG_LEVEL[0] = args.log_level
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    # TF32 matrix products on recent GPUs round the inputs to 10-bit mantissas: scores would
    # leave the daemons' float32 by far more than the tolerance docs/fleet.md states.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    if args.claim_ms < 1:
        p.error("--claim-ms must be positive")
    try:
        parse_url(args.redis)
    except InputError as e:  # a malformed option: status 2, as zmixd
        p.error(str(e))
    try:
        if args.device.startswith("cuda") and not torch.cuda.is_available():
            raise InputError(f"--device {args.device}: this PyTorch sees no CUDA device")
        try:
            device = torch.device(args.device)
        except RuntimeError:
            raise InputError(f"--device {args.device}: expected cpu, cuda or cuda:N")
        password = read_password(args.password_file) if args.password_file else None
        experts = [e for e in args.experts.split(",") if e]
        if not experts:
            raise InputError("--experts: no file given")
        t0 = time.monotonic()
        model = Model(args.model)
        scorer = Scorer(model, experts, args.adapt, device, args.memory_mb,
                        getattr(torch, args.dtype), getattr(torch, args.svd_dtype))
        if args.print_identity:
            print(json.dumps({"model_fingerprint": model.fingerprint,
                              "experts_digest": scorer.digest}))
            return 0
        log("info", f"loaded {args.model} and {len(experts)} experts ({scorer.M} adapted "
                    f"matrices) in {time.monotonic() - t0:.2f} s")
        ev = Evaluator(args, scorer, password)
        ev.join()
    except InputError as e:
        sys.stderr.write(f"evaluator.py: {e}\n")
        return 1
    except ConnectionError as e:
        sys.stderr.write(f"evaluator.py: --redis {args.redis}: {e}\n")
        return 1

    def stop(signum, frame):
        ev.stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ev.run()
    log("info", f"stopped ({ev.scored} chunks scored)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
