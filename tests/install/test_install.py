"""zmix as an operator installs it: `cmake --install` into a temporary prefix, then only what
landed there. The C example is built against the installed library through pkg-config and
runs without LD_LIBRARY_PATH against a daemon started from the installed zmixd (on the demo
model the installed zmix writes); the man pages name every option `--help` prints; the
systemd unit passes `systemd-analyze verify`."""

import os
import re
import shutil
import subprocess
import sys

import pytest

BUILD_DIR = os.environ.get("ZMIX_BUILD_DIR", "")
SOURCE_DIR = os.environ.get("ZMIX_SOURCE_DIR",
                            os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SANITIZED = os.environ.get("ZMIX_SANITIZE", "0") in ("1", "ON", "TRUE", "true")

# the daemon fixture the Python client's tests use
sys.path.insert(0, os.path.join(SOURCE_DIR, "clients", "python", "tests"))
from zmixd_fixture import Daemon  # noqa: E402

pytestmark = pytest.mark.skipif(not BUILD_DIR, reason="ZMIX_BUILD_DIR not set (run by ctest)")


def run(args, env=None, cwd=None, timeout=120, input=None):
    full = {k: v for k, v in os.environ.items()
            if k not in ("LD_LIBRARY_PATH", "ZMIX_ADDR", "ZMIX_TOKEN_FILE", "PKG_CONFIG_PATH")}
    full.update(env or {})
    return subprocess.run(args, capture_output=True, text=True, env=full, cwd=cwd,
                          timeout=timeout, input=input)


@pytest.fixture(scope="module")
def prefix(tmp_path_factory):
    p = tmp_path_factory.mktemp("install") / "prefix"
    r = run(["cmake", "--install", BUILD_DIR, "--prefix", str(p)])
    assert r.returncode == 0, r.stdout + r.stderr
    return p


def test_the_install_tree(prefix):
    for rel in ("bin/zmixd", "bin/zmix"):
        assert os.access(prefix / rel, os.X_OK), rel
    for rel in ("include/zmix/client.h", "include/zmix/common.h", "lib/libzmix_client.a",
                "lib/pkgconfig/zmix-client.pc", "share/man/man1/zmixd.1",
                "share/man/man1/zmix.1", "lib/systemd/system/zmixd.service",
                "etc/zmix/zmixd.conf"):
        assert (prefix / rel).is_file(), rel
    sonames = [f for f in os.listdir(prefix / "lib") if f.startswith("libzmix_client.so")]
    assert "libzmix_client.so" in sonames and len(sonames) == 3, sonames
    # the unit names the programs and the config file of this prefix
    unit = (prefix / "lib/systemd/system/zmixd.service").read_text()
    assert f"ExecStart={prefix}/bin/zmixd --cache-dir /var/lib/zmix " \
           f"--config {prefix}/etc/zmix/zmixd.conf" in unit, unit
    for key in ("StateDirectory=zmix", "NoNewPrivileges=yes", "ProtectSystem=strict",
                "ProtectHome=", "PrivateTmp=yes"):
        assert key in unit, key
    # the unit's command line with the installed config parses: all it lacks is the model
    # and the experts, which the operator sets (docs/install.md)
    exec_start = re.search(r"^ExecStart=(.*)$", unit, re.M).group(1).split()
    exec_start[exec_start.index("/var/lib/zmix")] = str(prefix / "state")
    r = run(exec_start)
    assert r.returncode == 2 and "--model is required" in r.stderr, r.stdout + r.stderr
    # an edited config file survives a second install
    conf = prefix / "etc/zmix/zmixd.conf"
    conf.write_text(conf.read_text() + "workers = 3\n")
    r = run(["cmake", "--install", BUILD_DIR, "--prefix", str(prefix)])
    assert r.returncode == 0 and "Keeping: " in r.stdout, r.stdout + r.stderr
    assert conf.read_text().endswith("workers = 3\n")


def test_staged_install_into_usr(tmp_path):
    """DESTDIR staging for a package: the prefix /usr keeps its settings in /etc, and the
    unit names the paths of the target system, not of the staging folder."""
    stage = tmp_path / "stage"
    r = run(["cmake", "--install", BUILD_DIR, "--prefix", "/usr"], env={"DESTDIR": str(stage)})
    assert r.returncode == 0, r.stdout + r.stderr
    assert os.access(stage / "usr/bin/zmixd", os.X_OK)
    assert (stage / "etc/zmix/zmixd.conf").is_file()
    assert not (stage / "usr/etc").exists()
    unit = (stage / "usr/lib/systemd/system/zmixd.service").read_text()
    assert "ExecStart=/usr/bin/zmixd --cache-dir /var/lib/zmix --config /etc/zmix/zmixd.conf" \
        in unit, unit
    assert str(stage) not in unit


def _man_options(page):
    text = page.read_text().replace("\\-", "-")  # troff's \- is a minus sign
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", text)), text


def _help_options(text):
    return set(re.findall(r"(?<![\w-])--([a-z][a-z0-9-]*)", text))


def test_man_pages_are_true_to_help(prefix):
    man, _ = _man_options(prefix / "share/man/man1/zmixd.1")
    r = run([str(prefix / "bin/zmixd"), "--help"])
    helped = _help_options(r.stdout + r.stderr)
    assert len(helped) >= 25
    assert helped - man == set(), "zmixd --help options missing from zmixd.1"
    assert man - helped == set(), "zmixd.1 options zmixd --help does not know"

    man, text = _man_options(prefix / "share/man/man1/zmix.1")
    zmix = str(prefix / "bin/zmix")
    top = run([zmix, "--help"]).stdout
    commands = re.findall(r"^  ([a-z][a-z-]+)  ", top, re.M)
    assert len(commands) > 10, top
    helped = _help_options(top)
    for cmd in commands:
        assert re.search(r"^\.B[IR]? \"?%s\b" % re.escape(cmd), text, re.M), cmd
        r = run([zmix, cmd, "--help"])
        assert r.returncode == 0, (cmd, r.stderr)
        helped |= _help_options(r.stdout)
    assert helped - man == set(), "zmix --help options missing from zmix.1"
    assert man - helped == set(), "zmix.1 options no --help knows"
    for var in ("ZMIX_ADDR", "ZMIX_TOKEN_FILE"):
        assert var in text


def test_systemd_unit_verifies(prefix):
    tool = shutil.which("systemd-analyze")
    if not tool:
        pytest.skip("systemd-analyze is not installed (Debian package systemd)")
    unit = prefix / "lib/systemd/system/zmixd.service"
    # MANPATH: its Documentation=man:zmixd(1) must be found among the installed pages
    r = run([tool, "verify", str(unit)], env={"MANPATH": str(prefix / "share/man")})
    assert r.returncode == 0 and r.stderr.strip() == "", r.stdout + r.stderr
    # a broken unit fails: the check can fail
    bad = prefix / "bad" / "zmixd.service"
    bad.parent.mkdir(exist_ok=True)
    bad.write_text(unit.read_text().replace(f"{prefix}/bin/zmixd", f"{prefix}/bin/nothere"))
    r = run([tool, "verify", str(bad)], env={"MANPATH": str(prefix / "share/man")})
    assert r.returncode != 0 and "nothere" in r.stderr, r.stdout + r.stderr


@pytest.fixture(scope="module")
def installed_daemon(prefix, tmp_path_factory):
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    env["OPENBLAS_NUM_THREADS"] = "1"
    d = Daemon(str(prefix / "bin/zmixd"), str(prefix / "bin/zmix"),
               tmp_path_factory.mktemp("daemon"), env=env)
    yield d
    assert d.stop() == 0


def test_c_example_runs_against_the_installed_library(prefix, installed_daemon, tmp_path):
    if not shutil.which("pkg-config") or not shutil.which("make") or not shutil.which("cc"):
        pytest.fail("pkg-config, make or cc missing: scripts/install-deps.sh installs them")
    env = {"PKG_CONFIG_PATH": str(prefix / "lib/pkgconfig")}
    cflags = "-O1 -std=c11 -Wall -Wextra -Werror"
    if SANITIZED:  # the installed library is instrumented: link the sanitizer runtimes too
        cflags += " -fsanitize=address,undefined"
    r = run(["make", "-f", os.path.join(SOURCE_DIR, "examples/c/Makefile"), f"CFLAGS={cflags}"],
            env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    exe = str(tmp_path / "adapt_task")
    # linked against the installed shared library, found through the run path
    r = run(["ldd", exe])
    assert f"libzmix_client.so.0 => {prefix}/lib/" in r.stdout, r.stdout
    out = tmp_path / "z.safetensors"
    r = run([exe, installed_daemon.address, "installed-task", str(out)])
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"model llama: 4 experts, \d+ adapted matrices", r.stdout), r.stdout
    assert re.search(r"generation (\d+)/\1, state done", r.stdout), r.stdout
    assert out.stat().st_size > 8
    # without an address: $ZMIX_ADDR, as every client
    r = run([exe, "installed-task", str(out)], env={"ZMIX_ADDR": installed_daemon.address})
    assert r.returncode == 0 and "(cached)" in r.stdout, r.stdout + r.stderr
    # and the installed CLI sees the same daemon through the same variable
    r = run([str(prefix / "bin/zmix"), "tasks"], env={"ZMIX_ADDR": installed_daemon.address})
    assert r.returncode == 0 and "installed-task" in r.stdout, r.stdout + r.stderr


def test_clients_share_zmix_addr_and_zmix_token_file(prefix, installed_daemon, tmp_path):
    """The C library (through the example) and the installed CLI reach a TCP listener that
    needs a token through the same two variables, and fail without the token."""
    env = {"PKG_CONFIG_PATH": str(prefix / "lib/pkgconfig")}
    cflags = "-O1" + (" -fsanitize=address,undefined" if SANITIZED else "")
    r = run(["make", "-f", os.path.join(SOURCE_DIR, "examples/c/Makefile"), f"CFLAGS={cflags}"],
            env=env, cwd=str(tmp_path))
    assert r.returncode == 0, r.stdout + r.stderr
    exe = str(tmp_path / "adapt_task")
    both = {"ZMIX_ADDR": installed_daemon.tcp, "ZMIX_TOKEN_FILE": str(installed_daemon.token_file)}
    r = run([exe, "tcp-task", str(tmp_path / "z.safetensors")], env=both)
    assert r.returncode == 0 and "state done" in r.stdout, r.stdout + r.stderr
    r = run([exe, "tcp-task", str(tmp_path / "z.safetensors")],
            env={"ZMIX_ADDR": installed_daemon.tcp})
    assert r.returncode == 1 and "EAUTH" in r.stderr, r.stdout + r.stderr
    zmix = str(prefix / "bin/zmix")
    r = run([zmix, "tasks"], env=both)
    assert r.returncode == 0 and "tcp-task" in r.stdout, r.stdout + r.stderr
    r = run([zmix, "tasks"], env={"ZMIX_ADDR": installed_daemon.tcp})
    assert r.returncode == 1 and "ZMIX_TOKEN_FILE" in r.stderr, r.stdout + r.stderr
