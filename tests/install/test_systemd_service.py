"""docs/install.md followed on a real systemd: the service is installed with `cmake --install`
into /usr, enabled and started with systemctl, sandboxed as its unit says, and the C and
Python examples adapt a task through it.

The machine's own init may not be systemd (containers, CI runners), so the test boots one:
Debian's /lib/systemd/systemd as PID 1 of new PID, mount, network, UTS, IPC and cgroup
namespaces, in container mode (as systemd-nspawn runs it). /etc, /usr and /var are overlays
whose writes land in a tmpfs, and /tmp and /run are fresh, so installing into /usr, adding the
zmix user and the service's state change nothing outside the test. The booted system is a
small target (sysinit and sockets), with the units that would touch the host's hardware or
kernel settings masked. Needs root and the systemd package; skipped otherwise.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import time
import warnings

import pytest

BUILD_DIR = os.environ.get("ZMIX_BUILD_DIR", "")
SOURCE_DIR = os.environ.get("ZMIX_SOURCE_DIR",
                            os.path.abspath(os.path.join(os.path.dirname(__file__), "..", "..")))
SYSTEMD = "/lib/systemd/systemd"

pytestmark = [
    pytest.mark.skipif(not BUILD_DIR, reason="ZMIX_BUILD_DIR not set (run by ctest)"),
    pytest.mark.skipif(os.geteuid() != 0, reason="booting a systemd needs root"),
    pytest.mark.skipif(not os.access(SYSTEMD, os.X_OK) or not shutil.which("unshare")
                       or not shutil.which("nsenter"),
                       reason="systemd, unshare or nsenter missing (Debian systemd, util-linux)"),
]

def _namespaces_refused():
    """Why this machine cannot make the namespaces (a container without the privilege), or ""."""
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return ""
    r = subprocess.run(["unshare", "--pid", "--fork", "--mount", "--net", "--cgroup", "--uts",
                        "--ipc", "--mount-proc", "true"], capture_output=True, text=True)
    return r.stderr.strip() if r.returncode != 0 else ""


_REFUSED = _namespaces_refused()
pytestmark.append(pytest.mark.skipif(bool(_REFUSED), reason="cannot make namespaces: " + _REFUSED))

# Units a booted system would start that act on the host's devices, kernel settings or
# consoles, none of which this test may touch.
MASKED = ("systemd-udevd.service systemd-udevd-control.socket systemd-udevd-kernel.socket "
          "systemd-udev-trigger.service systemd-udev-settle.service "
          "systemd-modules-load.service systemd-sysctl.service systemd-binfmt.service "
          "proc-sys-fs-binfmt_misc.automount systemd-remount-fs.service "
          "systemd-firstboot.service systemd-hwdb-update.service systemd-random-seed.service "
          "console-getty.service getty@.service").split()

BOOT = r"""
set -e
mount --make-rprivate /
# The overlays' writable halves live in the fresh /run. Nothing is mounted over a directory
# that has mounts below it: the unit's own sandbox (ProtectSystem=strict) remounts every
# mount it finds, and one hidden under another fails it ("Failed to set up mount
# namespacing").
mount -t tmpfs -o mode=0755 tmpfs /run
for d in etc usr var; do
  mkdir -p /run/zmix-test/$d/upper /run/zmix-test/$d/work
  mount -t overlay overlay -o lowerdir=/$d,upperdir=/run/zmix-test/$d/upper,workdir=/run/zmix-test/$d/work /$d
done
mount -t tmpfs -o mode=1777 tmpfs /tmp
# A /dev of its own, as a container manager gives one: the machine's may have mounts stacked
# on one another (two devpts on /dev/pts), which the unit's PrivateDevices cannot copy
# ("/run/systemd/unit-root/dev: Invalid argument").
umount -R -l /dev
mount -t devtmpfs -o mode=755,nosuid devtmpfs /dev
mkdir -p /dev/pts /dev/shm
mount -t devpts -o newinstance,ptmxmode=0666,mode=620 devpts /dev/pts
mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
mount -o remount,bind,ro /sys
for u in %(masked)s; do ln -sf /dev/null /etc/systemd/system/$u; done
cat > /etc/systemd/system/zmix-test.target <<'UNIT'
[Unit]
Description=the system of the zmixd service test
Requires=sysinit.target sockets.target
After=sysinit.target sockets.target
AllowIsolate=yes
UNIT
export container=zmix-test
exec %(systemd)s --system --unit=zmix-test.target
""" % {"masked": " ".join(MASKED), "systemd": SYSTEMD}

TOKEN = "systemd-service-test-token-0123456789"


class System:
    """A booted systemd in its own namespaces; sh() runs a shell command inside them."""

    def __init__(self, log_path):
        self.log = open(log_path, "wb")
        self.proc = subprocess.Popen(
            ["unshare", "--pid", "--fork", "--mount", "--uts", "--ipc", "--net", "--cgroup",
             "--mount-proc", "bash", "-c", BOOT],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        self.pid = None
        deadline = time.time() + 30
        while self.pid is None:
            assert self.proc.poll() is None, "the boot script failed: " + open(log_path).read()
            assert time.time() < deadline, "systemd did not start"
            try:
                with open(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children") as f:
                    kids = f.read().split()
                if kids and os.readlink(f"/proc/{kids[0]}/exe").endswith("/systemd"):
                    self.pid = int(kids[0])
            except OSError:
                pass
            time.sleep(0.05)
        while self.sh("test -S /run/systemd/private").returncode != 0:  # its control socket
            assert self.proc.poll() is None and time.time() < deadline, open(log_path).read()
            time.sleep(0.05)
        r = self.sh("systemctl is-system-running --wait", timeout=60)
        assert r.stdout.strip() == "running", r.stdout + r.stderr + self.sh(
            "systemctl --failed --no-pager").stdout

    def sh(self, command, timeout=120, env=None):
        full = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME": "/tmp", "LANG": "C.UTF-8", "OPENBLAS_NUM_THREADS": "1"}
        full.update(env or {})
        return subprocess.run(["nsenter", "-t", str(self.pid), "-a", "bash", "-c", command],
                              capture_output=True, text=True, env=full, timeout=timeout)

    def ok(self, command, timeout=120, env=None):
        r = self.sh(command, timeout=timeout, env=env)
        assert r.returncode == 0, f"{command}\n--- stdout\n{r.stdout}\n--- stderr\n{r.stderr}"
        return r.stdout

    def journal(self):
        return self.sh("journalctl -u zmixd --no-pager -o cat").stdout

    def shutdown(self):
        if self.pid is not None:
            self.sh("systemctl poweroff --no-block", timeout=30)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)  # PID 1 of the namespace takes it all
            self.proc.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def system(tmp_path_factory):
    s = System(tmp_path_factory.mktemp("systemd") / "boot.log")
    yield s
    s.shutdown()


def wait_active(system, timeout=60):
    deadline = time.time() + timeout
    while True:
        state = system.sh("systemctl is-active zmixd").stdout.strip()
        sock = system.sh("test -S /run/zmix/zmixd.sock").returncode == 0
        if state == "active" and sock:
            return
        assert state in ("active", "activating") and time.time() < deadline, \
            f"zmixd is {state}\n{system.journal()}"
        time.sleep(0.1)


def test_the_service_as_docs_install_md_runs_it(system):
    # 1. install into /usr (the overlay), as the page's first section
    out = system.ok(f"cmake --install {BUILD_DIR} --prefix /usr")
    assert "/usr/lib/systemd/system/zmixd.service" in out, out
    assert "/etc/zmix/zmixd.conf" in out, out
    system.ok("useradd --system --home-dir /var/lib/zmix --shell /usr/sbin/nologin zmix")
    system.ok("systemctl daemon-reload")

    # Some hosts' /dev cannot be privatised inside these namespaces (systemd fails the unit
    # with "Failed to set up mount namespacing: .../dev"). There, and only there, the test
    # goes on without PrivateDevices (a drop-in) and checks the rest of the sandbox.
    system.sh("systemctl start zmixd")
    time.sleep(1.0)
    if "Failed to set up mount namespacing: /run/systemd/unit-root/dev" in system.journal():
        system.ok("mkdir -p /etc/systemd/system/zmixd.service.d && printf "
                  "'[Service]\\nPrivateDevices=no\\n' > "
                  "/etc/systemd/system/zmixd.service.d/no-private-devices.conf")
        system.ok("systemctl stop zmixd; systemctl reset-failed zmixd; systemctl daemon-reload")
        warnings.warn("this host's /dev cannot be privatised here: PrivateDevices=no")
    else:
        system.sh("systemctl stop zmixd; systemctl reset-failed zmixd")
    system.ok("journalctl --rotate --vacuum-time=1s >/dev/null 2>&1 || true")

    # 2. as installed, the service refuses to start without a model, says why, and is not
    # restarted in a loop (RestartPreventExitStatus)
    r = system.sh("systemctl start zmixd")
    deadline = time.time() + 30
    while system.sh("systemctl is-failed zmixd").stdout.strip() != "failed":
        assert time.time() < deadline, system.journal()
        time.sleep(0.1)
    assert "--model is required" in system.journal()
    show = system.ok("systemctl show zmixd -p ExecMainStatus -p NRestarts")
    assert "ExecMainStatus=2" in show and "NRestarts=0" in show, show
    system.ok("systemctl reset-failed zmixd")

    # 3. the operator's settings: the demo model, and a loopback TCP listener with a token
    system.ok("zmix demo-init /var/lib/zmix-demo >/dev/null && chmod -R a+rX /var/lib/zmix-demo")
    experts = ",".join(f"/var/lib/zmix-demo/experts/{c}.safetensors"
                       for c in ("red", "green", "blue", "gold"))
    system.ok(f"echo {TOKEN} > /etc/zmix/token && chown zmix /etc/zmix/token && "
              "chmod 600 /etc/zmix/token")
    system.ok("cat >> /etc/zmix/zmixd.conf <<'EOF'\n"
              "model = /var/lib/zmix-demo/model\n"
              f"experts = {experts}\n"
              "listen = tcp:127.0.0.1:7878\n"
              "token-file = /etc/zmix/token\n"
              "workers = 2\n"
              "EOF")
    system.ok("systemctl enable --now zmixd")
    assert system.ok("systemctl is-enabled zmixd").strip() == "enabled"
    wait_active(system)
    assert system.sh("systemctl status zmixd --no-pager").returncode == 0

    # 4. the sandbox the unit asks for is the one the daemon runs in
    pid = system.ok("systemctl show zmixd -p MainPID --value").strip()
    status = system.ok(f"cat /proc/{pid}/status")
    uid = system.ok("id -u zmix").strip()
    assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s", status, re.M), status
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M), status
    assert re.search(r"^Seccomp:\s+2$", status, re.M), status
    assert re.search(r"^CapEff:\s+0+$", status, re.M), status
    mounts = system.ok(f"cat /proc/{pid}/mountinfo")
    for path in ("/usr", "/etc"):  # ProtectSystem=strict: read-only but for the state
        line = next(ln for ln in mounts.splitlines() if ln.split()[4] == path)
        assert " ro," in line or " ro " in line, line
    state = next(ln for ln in mounts.splitlines() if ln.split()[4] == "/var/lib/zmix")
    assert " rw," in state or " rw " in state, state
    assert system.ok("stat -c '%U %a' /var/lib/zmix").split() == ["zmix", "700"]
    assert system.ok("stat -c '%U %a' /run/zmix/zmixd.sock").split() == ["zmix", "600"]

    # 5. clients: the CLI as zmix on the Unix socket; C and Python over TCP with the token,
    # through ZMIX_ADDR and ZMIX_TOKEN_FILE
    info = system.ok("runuser -u zmix -- zmix info --socket /run/zmix/zmixd.sock")
    assert "llama" in info, info
    system.ok("mkdir /tmp/client && cp /etc/zmix/token /tmp/client/token")
    tcp = {"ZMIX_ADDR": "tcp:127.0.0.1:7878", "ZMIX_TOKEN_FILE": "/tmp/client/token"}
    system.ok(f"cd /tmp/client && make -f {SOURCE_DIR}/examples/c/Makefile")
    ldd = system.ok("ldd /tmp/client/adapt_task")
    found = re.search(r"libzmix_client\.so\.0 => (\S+)", ldd)
    assert found, ldd
    assert system.ok(f"realpath {found.group(1)}").strip().startswith(
        "/usr/lib/libzmix_client.so.0"), ldd
    out = system.ok("/tmp/client/adapt_task c-task /tmp/client/z.safetensors", env=tcp,
                    timeout=300)
    assert re.search(r"generation (\d+)/\1, state done", out), out
    system.ok(f"cp -r {SOURCE_DIR}/clients/python /tmp/client/pkg && "
              "rm -rf /tmp/client/pkg/build /tmp/client/pkg/*.egg-info && "
              "/usr/bin/python3 -m venv --system-site-packages --without-pip /tmp/client/venv "
              "&& /tmp/client/venv/bin/python -m pip install --quiet --no-index "
              "--no-build-isolation --disable-pip-version-check /tmp/client/pkg")
    out = system.ok(f"/tmp/client/venv/bin/python {SOURCE_DIR}/examples/python/"
                    "submit_and_wait.py py-task /var/lib/zmix-demo/task.json --iters 4",
                    env=tcp, timeout=300)
    final = json.loads(out[out.index("{"):])
    assert final["state"] == "done" and final["task"] == "py-task", final
    r = system.sh("/tmp/client/adapt_task c-task /tmp/client/z2.safetensors",
                  env={"ZMIX_ADDR": tcp["ZMIX_ADDR"]})
    assert r.returncode != 0 and "EAUTH" in r.stderr, r.stdout + r.stderr

    # 6. reload reopens the log and keeps the daemon; stop checkpoints and exits 0; the task
    # cache in the state directory survives the restart
    system.ok("systemctl reload zmixd")
    assert system.ok("systemctl show zmixd -p MainPID --value").strip() == pid
    system.ok("systemctl stop zmixd", timeout=60)
    show = system.ok("systemctl show zmixd -p ExecMainStatus -p ActiveState")
    assert "ExecMainStatus=0" in show and "ActiveState=inactive" in show, show
    system.ok("systemctl start zmixd")
    wait_active(system)
    tasks = system.ok("zmix tasks", env=tcp)
    assert "c-task" in tasks and "py-task" in tasks, tasks
