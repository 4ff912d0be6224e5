"""ZMIX_SCORE_TRACE (docs/scoring.md, "Diagnostics"): every scored candidate's per-example
scores, one line each, in scoring order; and bench/prune_ceiling.py, which replays such a
trace to bound what exact pruning could skip."""

import json
import os
import re
import subprocess
import sys

from cli_fixtures import requires_cli, run, ZMIX
from conftest import MODEL_DIR, SOURCE_DIR, make_examples

pytestmark = requires_cli


def test_trace_holds_every_candidates_examples(tmp_path, experts):
    ex = tmp_path / "ex.json"
    ex.write_text(json.dumps({"examples": make_examples(n=5, seed=93)}))
    trace = tmp_path / "trace.txt"
    pop, iters = 8, 4
    env = dict(os.environ, ZMIX_SCORE_TRACE=str(trace))
    r = run([ZMIX, "adapt", "--model", MODEL_DIR, "--experts", ",".join(experts), "--threads",
             "1", "--pop", str(pop), "--iters", str(iters), "--std-tol", "0", "--target-acc", "2",
             "--quiet", "--examples", str(ex), "--out", str(tmp_path / "r.json")], env=env)
    assert r.rc == 0, r
    doc = json.load(open(tmp_path / "r.json"))
    lines = [ln.split() for ln in trace.read_text().splitlines()]
    assert all(ln[0] == "C" and len(ln) % 3 == 1 for ln in lines)
    n = doc["n_train"]  # the search examples (a held-out share is scored apart)
    search = [ln for ln in lines if len(ln) == 1 + 3 * n]
    # the base model and each expert alone, then every evaluation of the search
    assert len(search) == 1 + len(experts) + doc["evaluations"], (len(search), doc["evaluations"])
    # the best of the document is one traced candidate, its mean the same double
    scores = []
    for ln in search[1 + len(experts):]:
        v = [(int(ln[1 + 3 * e]), float(ln[2 + 3 * e]), float(ln[3 + 3 * e])) for e in range(n)]
        scores.append((sum(e[0] for e in v) / n, sum(e[1] for e in v) / n))
    assert (doc["best"]["accuracy"], doc["best"]["loglik"]) in scores
    assert max(scores) == (doc["best"]["accuracy"], doc["best"]["loglik"])

    out = subprocess.run([sys.executable, os.path.join(SOURCE_DIR, "bench", "prune_ceiling.py"),
                          str(trace), "--examples", str(n), "--pop", str(pop), "--mu", "4",
                          "--skip", str(1 + len(experts)), "--blocks", "1,2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    got = {}
    for m in re.finditer(r"^(speculative|oracle)\s+(hardest first|given order)\s+block (\d+): "
                         r"skipped (\d+) of (\d+) ", out.stdout, re.M):
        got[(m[1], m[2], int(m[3]))] = (int(m[4]), int(m[5]))
    assert len(got) == 8, out.stdout
    for (kind, order, block), (skipped, total) in got.items():
        assert total == doc["evaluations"] // pop * pop * n and 0 <= skipped < total
        # a pruning the speculative threshold makes and that holds, the exact one makes too
        assert got[("oracle", order, block)][0] >= skipped
