"""The zmix_client package as installed (pip install ./clients/python): run by ctest from a
venv, once as it is and once with NumPy hidden (python_client, python_client_without_numpy)."""

import io
import json
import os
import subprocess
import sys

import pytest

import zmix_client
from zmix_client import Client, RpcError, default_address, load_examples

SOURCE_DIR = os.environ.get("ZMIX_SOURCE_DIR", "")
EXAMPLES = [{"prompt": "The sky is ", "target": "blue"},
            {"prompt": "Grass is ", "target": "green"},
            {"prompt": "The sun is ", "target": "gold"}]


def numpy_present():
    try:
        import numpy  # noqa: F401
        return True
    except ImportError:
        return False


def test_imported_from_the_installed_copy():
    here = os.path.abspath(zmix_client.__file__)
    assert here.startswith(os.path.join(os.path.abspath(sys.prefix), "lib")) \
        and "site-packages" in here, (here, sys.prefix)
    if SOURCE_DIR:
        assert not here.startswith(os.path.join(os.path.abspath(SOURCE_DIR), "clients")), here
    assert zmix_client.__version__ == "0.1.0"


def test_numpy_is_as_the_run_says():
    want = os.environ.get("ZMIX_EXPECT_NUMPY")
    if want is None:
        pytest.skip("ZMIX_EXPECT_NUMPY not set")
    assert numpy_present() == (want == "1")


def test_default_address(clean_env):
    clean_env.setenv("XDG_CACHE_HOME", "/x/cache")
    assert default_address() == "unix:/x/cache/zmix/zmixd.sock"
    clean_env.setenv("ZMIX_ADDR", "tcp:127.0.0.1:9")
    assert default_address() == "tcp:127.0.0.1:9"
    clean_env.setenv("ZMIX_ADDR", "")
    assert default_address() == "unix:/x/cache/zmix/zmixd.sock"


def test_load_examples(tmp_path):
    good = tmp_path / "good.json"
    good.write_text(json.dumps({"examples": EXAMPLES}))
    assert load_examples(str(good)) == EXAMPLES
    assert load_examples(io.StringIO(json.dumps({"examples": EXAMPLES}))) == EXAMPLES
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(EXAMPLES))
    with pytest.raises(ValueError, match=r"bare.json: the top level is a list, not a JSON "
                                         r"object; expected \{\"examples\": \["):
        load_examples(str(bare))
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"examples": [{"prompt": "x"}]}))
    with pytest.raises(ValueError, match=r"examples\[0\] has neither \"target\" nor \"choices\""):
        load_examples(str(bad))
    bad.write_text(json.dumps({"examples": [{"target": "x"}]}))
    with pytest.raises(ValueError, match=r"examples\[0\] is not an object with \"prompt\""):
        load_examples(str(bad))
    # multiple choice (docs/user-guide.md) is an examples file too, and is checked as such
    mc = [{"prompt": [1, 5], "choices": [[7], [8, 9]], "answer": 1},
          {"prompt": "2+2=", "choices": ["4", "5"], "answer": 0}]
    bad.write_text(json.dumps({"examples": mc}))
    assert load_examples(str(bad)) == mc
    for broken, words in [({**mc[0], "answer": 2}, r"examples\[0\]\.answer: expected an int"),
                          ({**mc[0], "choices": [[7]]}, r"choices: expected a list of at least 2"),
                          ({**mc[0], "choices": [[7], []]}, r"choices\[1\]: expected text or"),
                          ({"prompt": [1], "target": ""}, r"examples\[0\]\.target is empty"),
                          ({"prompt": [], "target": [2]}, r"examples\[0\]\.prompt: expected")]:
        bad.write_text(json.dumps({"examples": [broken]}))
        with pytest.raises(ValueError, match=words):
            load_examples(str(bad))
    bad.write_text("{")
    with pytest.raises(ValueError, match="bad.json: not JSON"):
        load_examples(str(bad))


def test_z_is_a_list_of_floats_whatever_is_installed(daemon, clean_env):
    with Client(daemon.address) as c:
        job = c.submit("py-pkg", EXAMPLES, cem={"pop": 8, "iters": 2})
        if not job.get("cached"):
            assert c.wait(job["job"], timeout=60)["status"]["state"] == "done"
        r = c.get("py-pkg")
        assert r["z"] and all(type(v) is list and all(type(x) is float for x in v)
                              for v in r["z"].values())
        if numpy_present():
            a = c.get("py-pkg", as_numpy=True)["z"]
            assert all(str(v.dtype) == "float32" for v in a.values())
            assert {k: [float(x) for x in v] for k, v in a.items()} == r["z"]
        else:
            with pytest.raises(ImportError, match="as_numpy=True.*needs NumPy"):
                c.get("py-pkg", as_numpy=True)
        with pytest.raises(RpcError) as e:
            c.get("no-such-task")
        assert e.value.code == "ENOTFOUND"


def test_zmix_addr_and_zmix_token_file(daemon, clean_env, tmp_path):
    clean_env.setenv("ZMIX_ADDR", daemon.address)
    with Client() as c:
        assert c.address == daemon.address
        assert "model" in c.info()
    # TCP with a token: the token comes from ZMIX_TOKEN_FILE
    clean_env.setenv("ZMIX_ADDR", daemon.tcp)
    with Client() as c:
        with pytest.raises(RpcError) as e:
            c.info()
        assert e.value.code == "EAUTH"
    clean_env.setenv("ZMIX_TOKEN_FILE", daemon.token_file)
    with Client() as c:
        assert "model" in c.info()
    missing = str(tmp_path / "missing")
    clean_env.setenv("ZMIX_TOKEN_FILE", missing)
    with pytest.raises(ValueError, match="ZMIX_TOKEN_FILE: .*missing"):
        Client()


def test_examples_use_the_installed_package(daemon, clean_env, tmp_path):
    if not SOURCE_DIR:
        pytest.skip("ZMIX_SOURCE_DIR not set")
    script = os.path.join(SOURCE_DIR, "examples", "python", "submit_and_wait.py")
    bare = tmp_path / "bare.json"
    bare.write_text(json.dumps(EXAMPLES))
    env = dict(os.environ, ZMIX_ADDR=daemon.address)
    r = subprocess.run([sys.executable, script, "ex-task", str(bare)], capture_output=True,
                       text=True, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "the top level is a list, not a JSON object; expected" in r.stderr, r.stderr
    # "-" reads standard input, and the package it runs with is the installed one
    r = subprocess.run([sys.executable, "-c", "import runpy, sys, zmix_client; "
                        "print(zmix_client.__file__, file=sys.stderr); "
                        f"sys.argv = ['x', 'ex-task', '-', '--iters', '2', '--pop', '8']; "
                        f"runpy.run_path({script!r}, run_name='__main__')"],
                       input=json.dumps({"examples": EXAMPLES}), capture_output=True, text=True,
                       env=env)
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["state"] == "done"
    assert "site-packages" in r.stderr.splitlines()[0]
