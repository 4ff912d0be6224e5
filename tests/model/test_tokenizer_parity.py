#!/usr/bin/env python3
"""Tokenizer parity: zmix's tokenizer (through tests/model/tok_dump) against two reference
implementations on the same corpus, for each test tokenizer in tests/model/tokenizers/ and, when
../shared is there, the real GPT-2 tokenizer:

  - the tokenizers library's own Node binding (npm `tokenizers`, the Rust implementation
    transformers uses): ids with and without special tokens and both decodings must be equal
    for every string;
  - transformers.js (npm `@huggingface/transformers`): the same, except where transformers.js
    is known to differ from the library (each such string is counted under its reason, and a
    difference that no reason covers fails the test):
      nel     its ByteLevel pre-tokenizer has its own copy of GPT-2's regex where \\s is
              JavaScript's (U+FEFF a space, U+0085 not), not White_Space;
      bom     its ByteFallback decoder drops a leading U+FEFF (TextDecoder's BOM handling);
      digits  its Digits pre-tokenizer splits ASCII digits only, not every numeric character;
      strip   lstrip/rstrip of added tokens take JavaScript's whitespace (U+FEFF, not U+0085).

Both come from tests/model/tokenizers/node (package.json, installed by scripts/install-deps.sh
or here with npm ci); without them, and no way to install them, the test is skipped (exit 77).

  test_tokenizer_parity.py TOK_DUMP [--shared DIR] [--strings N]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "tokenizers")
NODE_DIR = os.path.join(FIXTURES, "node")
sys.path.insert(0, FIXTURES)

import corpus  # noqa: E402

SKIP = 77


def ensure_references():
    """The node packages, installed here if missing; False when impossible (then skip)."""
    if not shutil.which("node"):
        print("SKIP: node is not installed (scripts/install-deps.sh installs it)")
        return False
    mods = os.path.join(NODE_DIR, "node_modules")
    need = [os.path.join(mods, "@huggingface", "transformers"), os.path.join(mods, "tokenizers")]
    if all(os.path.isdir(p) for p in need):
        return True
    try:
        r = subprocess.run(["npm", "ci", "--ignore-scripts", "--no-audit", "--no-fund"],
                           cwd=NODE_DIR, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        print("SKIP: the reference tokenizers are not installed and npm could not run: %s" % e)
        return False
    if r.returncode != 0 or not all(os.path.isdir(p) for p in need):
        print("SKIP: the reference tokenizers are not installed and `npm ci` in %s failed "
              "(offline?):\n%s" % (NODE_DIR, r.stderr[-2000:]))
        return False
    return True


def components(tok, kind):
    """Every component of one kind (pre_tokenizer, decoder...), through Sequences."""
    out = []

    def walk(c):
        if not isinstance(c, dict):
            return
        out.append(c)
        for key in ("pretokenizers", "decoders", "normalizers", "processors"):
            for sub in c.get(key) or []:
                walk(sub)
    walk(tok.get(kind))
    return out


def js_reasons(tok):
    """The known transformers.js differences that can apply to this tokenizer, as predicates
    on the input string."""
    reasons = {}
    pres = components(tok, "pre_tokenizer")
    if any(p.get("type") == "ByteLevel" and p.get("use_regex", True) for p in pres):
        reasons["nel"] = lambda s: "\u0085" in s or "\ufeff" in s
    if any(d.get("type") == "ByteFallback" for d in components(tok, "decoder")):
        reasons["bom"] = lambda s: "\ufeff" in s
    if any(a.get("lstrip") or a.get("rstrip") for a in tok.get("added_tokens", [])):
        reasons["strip"] = lambda s: "\u0085" in s or "\ufeff" in s
    if any(p.get("type") == "Digits" for p in pres):
        reasons["digits"] = lambda s: any(
            unicodedata.category(c)[0] == "N" and not "0" <= c <= "9" for c in s)
    return reasons


FIELDS = ("ids", "plain", "shown", "text")


def prepare(name, directory, strings, tmp):
    """Writes the corpus for one tokenizer (the shared corpus plus its own added tokens and
    their near misses); returns (name, directory, tokenizer.json, corpus, strings)."""
    with open(os.path.join(directory, "tokenizer.json"), encoding="utf-8") as f:
        tok = json.load(f)
    specials = [a["content"] for a in tok.get("added_tokens", [])]
    texts = corpus.make(1, strings, specials)
    path = os.path.join(tmp, name + ".json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(texts, f, ensure_ascii=False)
    return name, directory, tok, path, texts


def read_lines(path):
    # Not splitlines(): the JSON holds U+2028, U+0085 and other line breaks unescaped.
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f.read().split("\n") if line]


def compare(job, ours_path, refs_path):
    name, _, tok, _, texts = job
    ours, refs = read_lines(ours_path), read_lines(refs_path)
    assert len(ours) == len(refs) == len(texts), (len(ours), len(refs), len(texts))
    reasons = js_reasons(tok)
    rs_bad, js_bad, js_known = [], [], {}
    for s, z, r in zip(texts, ours, refs):
        if "error" in z or "error" in r["rs"]:
            if "error" not in z or "error" not in r["rs"]:
                rs_bad.append((s, z, r["rs"]))
            continue
        if any(z[k] != r["rs"][k] for k in FIELDS):
            rs_bad.append((s, z, r["rs"]))
        if "error" in r["js"] or any(z[k] != r["js"][k] for k in FIELDS):
            why = next((k for k, pred in reasons.items() if pred(s)), None)
            if why:
                js_known[why] = js_known.get(why, 0) + 1
            else:
                js_bad.append((s, z, r["js"]))
    n = len(texts)
    n_known = sum(js_known.values())
    known = ", ".join("%s %d" % kv for kv in sorted(js_known.items())) or "none"
    print("%-12s %5d strings  tokenizers (Rust): %5d identical  transformers.js: %5d identical, "
          "%d known differences (%s), %d other"
          % (name, n, n - len(rs_bad), n - n_known - len(js_bad), n_known, known, len(js_bad)))
    for label, bad in (("tokenizers", rs_bad), ("transformers.js", js_bad)):
        for s, z, r in bad[:5]:
            print("  %s differs on %r:\n    zmix %s\n    ref  %s" % (label, s, z, r))
    return not rs_bad and not js_bad


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tok_dump")
    ap.add_argument("--shared", default=os.path.join(HERE, "..", "..", "..", "shared"))
    ap.add_argument("--strings", type=int, default=3000)
    args = ap.parse_args()
    if not ensure_references():
        return SKIP
    dirs = sorted((d, os.path.join(FIXTURES, d)) for d in os.listdir(FIXTURES)
                  if os.path.isfile(os.path.join(FIXTURES, d, "tokenizer.json")))
    gpt2 = os.path.join(args.shared, "tokenizers", "gpt2")
    if os.path.isfile(os.path.join(gpt2, "tokenizer.json")):
        dirs.append(("gpt2-real", gpt2))
    else:
        print("note: %s absent: the real GPT-2 tokenizer is not checked" % gpt2)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        jobs = [prepare(name, d, args.strings, tmp) for name, d in dirs]
        # The references in one node process (loading transformers.js is most of its time),
        # zmix alongside it.
        node_args = []
        for name, d, _, path, _ in jobs:
            node_args += [d, path, os.path.join(tmp, name + ".ref.jsonl")]
        node = subprocess.Popen(["node", os.path.join(NODE_DIR, "reference.mjs")] + node_args,
                                stderr=subprocess.PIPE, text=True)
        for name, d, _, path, _ in jobs:
            with open(os.path.join(tmp, name + ".zmix.jsonl"), "w") as out:
                r = subprocess.run([args.tok_dump, os.path.join(d, "tokenizer.json"), path],
                                   stdout=out, stderr=subprocess.PIPE, text=True, timeout=300)
            if r.returncode != 0:
                print("FAIL %s: tok_dump: %s" % (name, r.stderr))
                ok = False
        _, err = node.communicate(timeout=600)
        if node.returncode != 0:
            print("FAIL: reference.mjs: %s" % err[-3000:])
            return 1
        for job in jobs:
            ok = compare(job, os.path.join(tmp, job[0] + ".zmix.jsonl"),
                         os.path.join(tmp, job[0] + ".ref.jsonl")) and ok
    print("%d passed, %d failed" % ((len(dirs), 0) if ok else (0, len(dirs))))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
