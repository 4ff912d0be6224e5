"""zmixd --http (docs/metrics.md): /metrics parsed by a strict reader of the Prometheus text
format and checked against what the test did; the JSON API; the listener's security (token,
tenants, addresses) and its answers to bad requests. Run by ctest as e2e_http_metrics."""

import json
import math
import os
import re
import subprocess
import urllib.error
import urllib.request

import pytest

import conftest
from conftest import Daemon, free_port, make_examples
from zmix_client import Client, RpcError

SMALL = {"pop": 8, "iters": 3, "elite": 0.25, "std_tol": 0, "seed": 3}
ADMIN_TOKEN = "admin-token-0123456789abcdef"

# ---- A strict reader of the text exposition format (version 0.0.4) ------------------------

NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
LABEL = r"[a-zA-Z_][a-zA-Z0-9_]*"
SAMPLE_RE = re.compile(rf"^({NAME})(\{{(.*)\}})? (\S+)( -?\d+)?$")
LABEL_RE = re.compile(rf'({LABEL})="((?:[^"\\\n]|\\["\\n])*)"(,|$)')
TYPES = {"counter", "gauge", "histogram", "summary", "untyped"}


def parse_value(s):
    if s in ("+Inf", "-Inf", "NaN"):
        return float(s.replace("Inf", "inf").replace("NaN", "nan"))
    if not re.fullmatch(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?", s):
        raise AssertionError(f"bad sample value {s!r}")
    return float(s)


def parse_labels(s):
    labels, pos = {}, 0
    while pos < len(s):
        m = LABEL_RE.match(s, pos)
        assert m, f"bad label syntax at {s[pos:]!r}"
        name, value = m.group(1), m.group(2)
        assert name not in labels, f"label {name} twice in {{{s}}}"
        assert not name.startswith("__"), f"reserved label name {name}"
        labels[name] = value.replace('\\"', '"').replace("\\n", "\n").replace("\\\\", "\\")
        pos = m.end()
        assert m.group(3) == "," or pos == len(s)
    return labels


def family_of(sample, families):
    for suffix in ("_bucket", "_sum", "_count"):
        if sample.endswith(suffix) and families.get(sample[: -len(suffix)], {}).get(
                "type") == "histogram":
            return sample[: -len(suffix)]
    return sample


def parse_exposition(text):
    """{family: {"type", "help", "samples": [(name, labels, value)]}}; raises on any breach."""
    assert text.endswith("\n"), "the exposition must end with a newline"
    families, order, seen, current = {}, [], set(), None
    for n, line in enumerate(text[:-1].split("\n"), 1):
        where = f"line {n}: {line!r}"
        assert line, f"{where}: empty line"
        if line.startswith("#"):
            m = re.fullmatch(rf"# (HELP|TYPE) ({NAME}) (.*)", line)
            assert m, f"{where}: a comment that is neither HELP nor TYPE"
            kind, name, rest = m.groups()
            fam = families.setdefault(name, {"type": None, "help": None, "samples": []})
            assert not fam["samples"], f"{where}: {kind} after the family's samples"
            key = kind.lower()
            assert fam[key] is None, f"{where}: second {kind} for {name}"
            if kind == "TYPE":
                assert rest in TYPES, f"{where}: unknown type"
            fam[key] = rest
            if name not in order:
                order.append(name)
            current = name
            continue
        m = SAMPLE_RE.match(line)
        assert m, f"{where}: not a sample line"
        sname, _, labels_s, value_s, _ = m.groups()
        fname = family_of(sname, families)
        assert fname == current, f"{where}: sample of {fname} outside its family's block"
        fam = families[fname]
        assert fam["type"] is not None and fam["help"] is not None, f"{where}: no TYPE/HELP"
        labels = parse_labels(labels_s or "")
        key = (sname, tuple(sorted(labels.items())))
        assert key not in seen, f"{where}: duplicate series"
        seen.add(key)
        fam["samples"].append((sname, labels, parse_value(value_s)))
    for name, fam in families.items():
        assert fam["type"] and fam["help"] is not None, f"{name}: TYPE or HELP missing"
        assert fam["samples"], f"{name}: no samples"
        if fam["type"] == "histogram":
            check_histogram(name, fam["samples"])
    return families


def check_histogram(name, samples):
    groups = {}
    for sname, labels, value in samples:
        rest = tuple(sorted((k, v) for k, v in labels.items() if k != "le"))
        g = groups.setdefault(rest, {"buckets": [], "sum": None, "count": None})
        if sname == name + "_bucket":
            assert "le" in labels, f"{name}: bucket without le"
            g["buckets"].append((parse_value(labels["le"]), value))
        elif sname == name + "_sum":
            g["sum"] = value
        elif sname == name + "_count":
            g["count"] = value
    for rest, g in groups.items():
        les = [le for le, _ in g["buckets"]]
        assert les == sorted(les) and len(set(les)) == len(les), f"{name}{rest}: le order"
        assert les and les[-1] == math.inf, f"{name}{rest}: no +Inf bucket"
        counts = [c for _, c in g["buckets"]]
        assert all(a <= b for a, b in zip(counts, counts[1:])), f"{name}{rest}: not cumulative"
        assert g["count"] == counts[-1], f"{name}{rest}: _count != +Inf bucket"
        assert g["sum"] is not None and g["sum"] >= 0, f"{name}{rest}: _sum"


def value(fams, name, **labels):
    found = [v for s, lab, v in fams[family_of(name, fams)]["samples"]
             if s == name and all(lab.get(k) == str(x) for k, x in labels.items())]
    assert len(found) == 1, (name, labels, found)
    return found[0]


def check_conventions(fams):
    for name, fam in fams.items():
        assert name.startswith("zmix_"), name
        if fam["type"] == "counter":
            assert name.endswith("_total"), f"counter {name} without _total"
        else:
            assert not name.endswith("_total"), f"{fam['type']} {name} ends in _total"
        for unit in ("_ms", "_milliseconds", "_kb", "_mb", "_kilobytes", "_megabytes"):
            assert unit not in name, f"{name}: not in base units"


def check_monotone(a, b):
    for name, fam in a.items():
        if fam["type"] not in ("counter", "histogram"):
            continue
        before = {(s, tuple(sorted(lab.items()))): v for s, lab, v in fam["samples"]}
        after = {(s, tuple(sorted(lab.items()))): v for s, lab, v in b[name]["samples"]}
        for key, v in before.items():
            assert key in after and after[key] >= v, f"{key}: {v} -> {after.get(key)}"


def test_parser_rejects_malformed_expositions():
    good = "# HELP zmix_x_total x.\n# TYPE zmix_x_total counter\nzmix_x_total 1\n"
    parse_exposition(good)
    for bad in [good[:-1],                                           # no final newline
                good.replace("# HELP zmix_x_total x.\n", ""),        # no HELP
                good + "zmix_x_total 2\n",                            # duplicate series
                good.replace(" 1\n", " one\n"),                       # bad value
                good.replace("zmix_x_total 1", 'zmix_x_total{a="1",a="2"} 1'),
                good.replace("zmix_x_total 1", 'zmix_x_total{a=1} 1'),
                good + "# TYPE zmix_x_total counter\n",
                ("# HELP h h.\n# TYPE h histogram\nh_bucket{le=\"1\"} 2\n"
                 "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 1\n"),   # not cumulative
                ("# HELP h h.\n# TYPE h histogram\nh_bucket{le=\"1\"} 1\n"
                 "h_bucket{le=\"+Inf\"} 1\nh_sum 1\nh_count 2\n"),   # count != +Inf
                ("# HELP h h.\n# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\n"
                 "h_bucket{le=\"1\"} 1\nh_sum 1\nh_count 1\n")]:     # le order
        with pytest.raises(AssertionError):
            parse_exposition(bad)


# ---- The daemon -----------------------------------------------------------------------------

def get(url, token=None, method="GET"):
    req = urllib.request.Request(url, method=method)
    if token is not None:
        req.add_header("Authorization", "Bearer " + token)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read().decode()


@pytest.fixture
def http_daemon(tmp_path, experts):
    port = free_port()
    d = Daemon(str(tmp_path), experts, extra=["--http", f"127.0.0.1:{port}"]).start()
    d.http = f"http://127.0.0.1:{port}"
    yield d
    assert d.stop() == 0, d.log_text()


def scrape(d, token=None):
    status, headers, body = get(d.http + "/metrics", token)
    assert status == 200, body
    assert headers["Content-Type"].startswith("text/plain; version=0.0.4"), headers
    fams = parse_exposition(body)
    check_conventions(fams)
    return fams


def test_metrics_match_what_the_daemon_did(http_daemon):
    d = http_daemon
    with d.client() as c:
        first = scrape(d)
        assert value(first, "zmix_evaluations_total") == 0
        job = c.submit("metrics-task", make_examples(n=3, seed=11), cem=SMALL)["job"]
        st = c.wait(job, timeout=120)["status"]
        assert st["state"] == "done", st
        stats = c.stats()
        second = scrape(d)
        check_monotone(first, second)
        assert value(second, "zmix_evaluations_total") == stats["evaluations"] > 0
        assert value(second, "zmix_evaluations_total") >= st["evaluations"]
        assert value(second, "zmix_generations_total") == st["generation"] > 0
        assert value(second, "zmix_scoring_seconds_total") > 0
        assert value(second, "zmix_jobs", state="done") == 1
        assert value(second, "zmix_jobs", state="running") == 0
        assert value(second, "zmix_jobs_done_total") == 1
        assert value(second, "zmix_queue_depth", priority=0) == 0
        assert value(second, "zmix_task_cache_entries") == stats["cache"]["tasks"] == 1
        assert value(second, "zmix_task_cache_resident_bytes") == \
            stats["cache"]["resident_bytes"] > 0
        assert value(second, "zmix_task_cache_misses_total") == stats["cache"]["misses"]
        assert value(second, "zmix_connections", transport="unix") == 1  # this client
        assert value(second, "zmix_connections", transport="http") >= 1  # this scrape
        assert value(second, "zmix_process_resident_memory_bytes") > 1 << 20
        assert value(second, "zmix_build_info", version=c.ping()["version"]) == 1
        assert value(second, "zmix_workers") == 2
        # the request histogram counted the calls above, each well under a second
        assert value(second, "zmix_request_duration_seconds_count", method="submit") == 1
        assert value(second, "zmix_request_duration_seconds_bucket", method="submit",
                     le="1") == 1
        assert value(second, "zmix_request_duration_seconds_count", method="wait") == 1

        # a bad request is counted under its code, an unknown method under "other"
        errors = value(second, "zmix_errors_total", code="ENOTFOUND")
        with pytest.raises(RpcError) as e:
            c.status(987654)
        assert e.value.code == "ENOTFOUND"
        with pytest.raises(RpcError):
            c.call("no_such_method", {})
        third = scrape(d)
        check_monotone(second, third)
        assert value(third, "zmix_errors_total", code="ENOTFOUND") == errors + 2
        assert value(third, "zmix_request_duration_seconds_count", method="other") == 1
        assert "no_such_method" not in json.dumps(third)


def test_json_api_shows_jobs_history_and_tasks(http_daemon):
    d = http_daemon
    with d.client() as c:
        job = c.submit("api-task", make_examples(n=2, seed=12), cem=SMALL)["job"]
        st = c.wait(job, timeout=120)["status"]
        status, headers, body = get(f"{d.http}/api/jobs")
        assert status == 200 and headers["Content-Type"] == "application/json"
        jobs = json.loads(body)
        assert [j["job"] for j in jobs] == [job]
        assert jobs[0]["state"] == "done" and jobs[0]["generation"] == st["generation"]
        assert jobs[0]["best"]["accuracy"] == pytest.approx(st["best"]["accuracy"])
        hist = json.loads(get(f"{d.http}/api/jobs/{job}/history")[2])
        assert len(hist["history"]) == st["generation"]
        assert len(hist["history"][0]["mean"]) == len(hist["history"][0]["std"]) == 3
        assert json.loads(get(f"{d.http}/api/jobs/{job}")[2])["job"] == job
        # ?limit=N bounds the finished jobs listed (unfinished ones are always listed)
        job2 = c.submit("api-task-2", make_examples(n=2, seed=14), cem=SMALL)["job"]
        c.wait(job2, timeout=120)
        assert [j["job"] for j in json.loads(get(f"{d.http}/api/jobs?limit=1")[2])] == [job2]
        assert len(json.loads(get(f"{d.http}/api/jobs?limit=2")[2])) == 2
        for bad in ["0", "501", "x", ""]:
            status, _, body = get(f"{d.http}/api/jobs?limit={bad}")
            assert status == 400 and "expected 1..500" in body, (bad, body)
        tasks = json.loads(get(f"{d.http}/api/tasks")[2])["tasks"]
        assert sorted(t["task"] for t in tasks) == ["api-task", "api-task-2"]
        got = json.loads(get(f"{d.http}/api/tasks/api-task")[2])
        assert len(got["alpha"]) == 3
        assert json.loads(get(f"{d.http}/api/info")[2])["version"] == c.ping()["version"]
        # errors are JSON with the protocol's code
        status, _, body = get(f"{d.http}/api/jobs/424242")
        assert status == 404 and json.loads(body)["code"] == "ENOTFOUND"
        status, _, body = get(f"{d.http}/api/tasks/nope")
        assert status == 404 and json.loads(body)["code"] == "ENOTFOUND"


def test_bad_http_requests_get_clear_answers_and_the_daemon_goes_on(http_daemon):
    d = http_daemon
    before = scrape(d)
    status, _, body = get(d.http + "/no/such/page")
    assert status == 404 and "/no/such/page" in body and "/metrics" in body
    status, headers, body = get(d.http + "/metrics", method="POST")
    assert status == 405 and "POST" in body and headers["Allow"] == "GET, HEAD"
    status, _, body = get(d.http + "/api/jobs/12abc")
    assert status == 404 and "/api/jobs/12abc" in body
    status, headers, body = get(d.http + "/")
    assert status == 200 and "<title>zmixd dashboard</title>" in body
    assert "default-src 'self'" in headers["Content-Security-Policy"]
    assert get(d.http + "/app.js")[0] == 200 and get(d.http + "/style.css")[0] == 200
    status, _, body = get(d.http + "/api/tasks/" + "x" * 300)
    assert status == 414 and "at most 255" in body
    with d.client() as c:
        assert c.ping()["pong"]
    after = scrape(d)
    check_monotone(before, after)
    counts = {s: value(after, "zmix_http_responses_total", status=s) -
              value(before, "zmix_http_responses_total", status=s)
              for s in (200, 401, 404, 405, 414)}
    # 200: /, /app.js, /style.css and the first scrape (each scrape counts the ones before)
    assert counts == {200: 4, 401: 0, 404: 2, 405: 1, 414: 1}, counts


def run_zmixd(experts, tmp_path, *extra):
    return subprocess.run(
        [conftest.ZMIXD, "--model", conftest.MODEL_DIR, "--experts", ",".join(experts),
         "--cache-dir", str(tmp_path / "cache"), "--listen", f"unix:{tmp_path}/s.sock", *extra],
        capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("addr,msg", [
    ("9464", "--http 9464: expected HOST:PORT"),
    ("127.0.0.1:99999", "--http 127.0.0.1:99999: expected HOST:PORT"),
    ("unix:/tmp/x", "--http unix:/tmp/x: expected HOST:PORT"),
    ("0.0.0.0:9464", "--http 0.0.0.0:9464 is not loopback: a --token-file is required"),
])
def test_bad_http_addresses_are_refused_with_the_reason(experts, tmp_path, addr, msg):
    r = run_zmixd(experts, tmp_path, "--http", addr)
    assert r.returncode != 0 and msg in r.stderr, r.stderr


def test_a_busy_http_port_is_named(experts, tmp_path):
    import socket
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    addr = f"127.0.0.1:{s.getsockname()[1]}"
    try:
        r = run_zmixd(experts, tmp_path, "--http", addr)
    finally:
        s.close()
    assert r.returncode != 0 and f"--http {addr}: cannot listen" in r.stderr, r.stderr


def write_secret(path, text):
    path.write_text(text)
    path.chmod(0o600)
    return str(path)


def test_tenants_need_the_administrator_token_for_http(experts, tmp_path):
    tenants = write_secret(tmp_path / "tenants", "acme acme-token-0123456789\n")
    r = run_zmixd(experts, tmp_path, "--tenants", tenants, "--http", f"127.0.0.1:{free_port()}")
    assert r.returncode != 0 and "--http with --tenants" in r.stderr, r.stderr


def test_token_guards_every_data_page_and_only_the_admin_token_opens_it(experts, tmp_path):
    token = write_secret(tmp_path / "token", ADMIN_TOKEN + "\n")
    tenants = write_secret(tmp_path / "tenants", "acme acme-token-0123456789\n")
    port, tcp = free_port(), free_port()
    d = Daemon(str(tmp_path / "d"), experts,
               extra=["--token-file", token, "--tenants", tenants,
                      "--listen", f"tcp:127.0.0.1:{tcp}", "--http", f"127.0.0.1:{port}"]).start()
    http = f"http://127.0.0.1:{port}"
    try:
        with Client(f"tcp:127.0.0.1:{tcp}", timeout=30) as acme:
            acme.auth("acme-token-0123456789")
            job = acme.submit("secret-task", make_examples(n=2, seed=13), cem=SMALL)["job"]
            acme.wait(job, timeout=120)
        for path in ["/metrics", "/api/jobs", f"/api/jobs/{job}", f"/api/jobs/{job}/history",
                     "/api/tasks", "/api/tasks/acme@secret-task", "/api/stats", "/api/info"]:
            status, headers, body = get(http + path)
            assert status == 401 and "Authorization: Bearer" in body, (path, body)
            assert headers["WWW-Authenticate"].startswith("Bearer"), path
            for wrong in ["acme-token-0123456789", ADMIN_TOKEN + "x", ADMIN_TOKEN[:-1], ""]:
                status, _, body = get(http + path, wrong)
                assert status == 401 and "wrong token" in body, (path, wrong, body)
            assert get(http + path, ADMIN_TOKEN)[0] == 200, path
        # the static page holds no data and loads without the token
        assert get(http + "/")[0] == 200
        # the administrator's view: the tenant's job and task, under the tenant's name
        jobs = json.loads(get(http + "/api/jobs", ADMIN_TOKEN)[2])
        assert [(j["job"], j["task"], j.get("tenant")) for j in jobs] == \
            [(job, "secret-task", "acme")]
        with d.client() as c:
            assert c.ping()["pong"]
    finally:
        assert d.stop() == 0, d.log_text()
