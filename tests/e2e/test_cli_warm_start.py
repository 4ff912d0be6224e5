"""Warm start from the command line: zmix adapt --warm-start RESULT (offline) and zmix submit
--warm-start TASK (through the daemon); a result made with another expert set is refused."""

import json

import pytest

from cli_fixtures import requires_cli, run, zmix, ZMIX
from conftest import MODEL_DIR, Daemon, make_examples

pytestmark = requires_cli

FAST = ["--pop", "8", "--iters", "3", "--std-tol", "0", "--quiet"]


def test_adapt_and_submit_warm_start(tmp_path, experts):
    ex = tmp_path / "ex.json"
    ex.write_text(json.dumps({"examples": make_examples(n=4, seed=90)}))
    ex2 = tmp_path / "ex2.json"
    ex2.write_text(json.dumps({"examples": make_examples(n=4, seed=91)}))
    base = [ZMIX, "adapt", "--model", MODEL_DIR, "--experts", ",".join(experts), *FAST]
    r = run(base + ["--examples", str(ex), "--out", str(tmp_path / "a.json")])
    assert r.rc == 0, r
    a = json.load(open(tmp_path / "a.json"))
    assert a["warm_start"] is None
    r = run(base + ["--examples", str(ex2), "--warm-start", str(tmp_path / "a.json"),
                    "--out", str(tmp_path / "b.json")])
    assert r.rc == 0, r
    b = json.load(open(tmp_path / "b.json"))
    assert b["warm_start"]["from"] == str(tmp_path / "a.json")
    assert b["warm_start"]["alpha"] == a["alpha"]
    assert b["key"] != json.load(open(tmp_path / "a.json"))["key"]

    # the same experts in another order are another expert set: its α means something else
    other = [ZMIX, "adapt", "--model", MODEL_DIR, "--experts", ",".join(reversed(experts)),
             *FAST, "--examples", str(ex2), "--warm-start", str(tmp_path / "a.json")]
    r = run(other)
    assert r.rc == 1 and "--warm-start" in r.err and "another expert set" in r.err, r

    d = Daemon(str(tmp_path / "d"), experts).start()
    try:
        r = zmix(d, "submit", "first", "--examples", str(ex), "--pop", "8", "--iters", "3",
                 "--wait")
        assert r.rc == 0, r
        r = zmix(d, "submit", "second", "--examples", str(ex2), "--pop", "8", "--iters", "3",
                 "--warm-start", "first", "--wait")
        assert r.rc == 0, r
        r = zmix(d, "get", "second", "--result", str(tmp_path / "second.json"))
        assert r.rc == 0, r
        doc = json.load(open(tmp_path / "second.json"))
        first = zmix(d, "get", "first", "--json").json()
        assert doc["warm_start"]["from"] == "task first"
        assert doc["warm_start"]["alpha"] == pytest.approx(first["alpha"], rel=1e-7)
        r = zmix(d, "submit", "third", "--examples", str(ex2), "--warm-start", "missing")
        assert r.rc != 0 and "not cached" in r.err, r
    finally:
        assert d.stop() == 0, d.log_text()
