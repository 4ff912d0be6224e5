"""The C client as a user gets it: `cmake --install` into a temporary prefix, the example in
examples/c built with nothing but `cc $(pkg-config --cflags --libs zmix-client)`, and run
against a real daemon."""

import os
import re
import shutil
import subprocess

import pytest

from cli_fixtures import BUILD_DIR, SANITIZED, SOURCE_DIR, read_safetensors, requires_cli, run

pytestmark = requires_cli


def test_c_example_builds_against_installed_library(shared_daemon, tmp_path):
    if not shutil.which("pkg-config") or not shutil.which("cc") or not shutil.which("make"):
        pytest.skip("pkg-config, cc or make missing")
    prefix = tmp_path / "prefix"
    r = run(["cmake", "--install", BUILD_DIR, "--prefix", str(prefix)])
    assert r.rc == 0, r
    pc = [p for p in (os.path.join(root, f) for root, _, fs in os.walk(prefix) for f in fs)
          if p.endswith("zmix-client.pc")]
    assert len(pc) == 1, r
    assert os.path.isfile(prefix / "include" / "zmix" / "client.h")
    env = {"PKG_CONFIG_PATH": os.path.dirname(pc[0])}
    flags = run(["pkg-config", "--cflags", "--libs", "zmix-client"], env=env)
    assert flags.rc == 0, flags
    # the .pc file locates the prefix from where it lies (${pcfiledir}): relocatable
    incs = [os.path.normpath(f[2:]) for f in flags.out.split() if f.startswith("-I")]
    assert incs == [str(prefix / "include")] and "-lzmix_client" in flags.out, flags
    exe = tmp_path / "adapt_task"
    cc = ["cc", "-std=c11", "-Wall", "-Wextra", "-Werror",
          os.path.join(SOURCE_DIR, "examples", "c", "adapt_task.c"), "-o", str(exe),
          *flags.out.split()]
    if SANITIZED:  # the installed library is instrumented: link the sanitizer runtimes too
        cc[1:1] = ["-fsanitize=address,undefined"]
    r = run(cc)
    assert r.rc == 0, r
    # the example's Makefile does the same from another folder
    mk = tmp_path / "mk"
    mk.mkdir()
    r = run(["make", "-f", os.path.join(SOURCE_DIR, "examples", "c", "Makefile"),
             "CFLAGS=-O1 -Wall -Wextra -Werror" + (" -fsanitize=address,undefined" if SANITIZED else "")],
            env=env, cwd=str(mk))
    assert r.rc == 0 and os.access(mk / "adapt_task", os.X_OK), r
    libdir = os.path.dirname(os.path.dirname(pc[0]))
    out = tmp_path / "z.safetensors"
    r = run([str(exe), shared_daemon.address, "c-task", str(out)],
            env={"LD_LIBRARY_PATH": libdir})
    assert r.rc == 0, r
    assert "model llama: 3 experts, 15 adapted matrices" in r.out, r
    assert re.search(r"job \d+ (queued|running)", r.out), r
    assert re.search(r"generation (\d+)/\1, state done", r.out), r
    tensors, meta = read_safetensors(out)
    assert len(tensors) == 15 and meta["task"] == "c-task"
    assert all(len(v) == 64 for v in tensors.values())
    # the library reports a missing daemon as such
    r = run([str(exe), f"unix:{tmp_path}/none.sock", "c-task", str(out)],
            env={"LD_LIBRARY_PATH": libdir})
    assert r.rc == 1 and "(ECONNECT)" in r.err and "none.sock" in r.err, r
    # and a C++ compiler accepts the header
    if shutil.which("c++"):
        src = tmp_path / "x.cpp"
        src.write_text("#include <zmix/client.h>\nint main() { zmix_client_opts o; "
                       "zmix_client_opts_default(&o); return o.timeout_ms > 0 ? 0 : 1; }\n")
        r = run(["c++", "-Wall", "-Werror", str(src), "-o", str(tmp_path / "xx"),
                 *(["-fsanitize=address,undefined"] if SANITIZED else []), *flags.out.split()])
        assert r.rc == 0, r
        assert run([str(tmp_path / "xx")], env={"LD_LIBRARY_PATH": libdir}).rc == 0
