"""zmixd against a hostile local user and unauthenticated TCP clients (issue 12, docs/reliability.md):
the cache directory's ownership and modes, a planted symbolic link, and the rules for
connections that have not authenticated yet (proto/PROTOCOL.md §1, §4.1, §6)."""

import os
import pwd
import socket
import stat
import time

import msgpack
import pytest

from conftest import Daemon, free_port, make_examples
from zmix_client import Client, RpcError

TOKEN = "s3cret-token-0123456789"
SMALL = {"pop": 8, "iters": 2, "elite": 0.25, "std_tol": 0}


def tcp_daemon(tmp_path, experts, *extra):
    token = tmp_path / "token"
    token.write_text(TOKEN + "\n")
    token.chmod(0o600)
    port = free_port()
    d = Daemon(str(tmp_path), experts,
               extra=["--listen", f"tcp:127.0.0.1:{port}", "--token-file", str(token), *extra])
    return d.start(), f"tcp:127.0.0.1:{port}"


def raw_tcp(address):
    host, _, port = address[4:].rpartition(":")
    return socket.create_connection((host, int(port)), timeout=10)


def read_until_closed(s, timeout):
    """Every message the daemon sends until it closes the connection; raises on timeout."""
    s.settimeout(timeout)
    unp = msgpack.Unpacker(raw=False)
    msgs = []
    while True:
        chunk = s.recv(65536)
        if not chunk:
            return msgs
        unp.feed(chunk)
        msgs.extend(unp)


# ---- unauthenticated clients --------------------------------------------------------------


def test_tricklers_lock_out_neither_tcp_clients_nor_the_socket_owner(tmp_path, experts):
    d, address = tcp_daemon(tmp_path, experts, "--max-connections", "8")
    tricklers = []
    try:
        with Client(address, token=TOKEN) as early:  # authenticated before the flood
            # 10 clients that never authenticate, each holding a partial frame and adding a
            # byte now and then: before the budgets they took all 8 slots.
            frame = msgpack.packb([0, 1, "auth", {"token": "x" * 200}])
            for _ in range(10):
                s = raw_tcp(address)
                s.sendall(frame[:3])
                tricklers.append(s)
            for i in range(4):
                for s in tricklers:
                    try:
                        s.sendall(frame[3 + i:4 + i])
                    except OSError:
                        pass  # closed to make room: expected for the oldest
                with Client(address, token=TOKEN) as late:
                    assert late.ping()["pong"] is True
                with d.client() as owner:
                    assert owner.ping()["pong"] is True
                assert early.ping()["pong"] is True
                time.sleep(0.2)
            with d.client() as owner:
                stats = owner.stats()
            # At most half the TCP slots are unauthenticated; the owner's socket is not counted.
            assert stats["connections"] <= 1 + 4 + 1, stats
    finally:
        for s in tricklers:
            s.close()
        assert d.stop() == 0
    log = d.log_text()
    assert "closed to admit a new connection" in log


def test_trickler_is_cut_at_the_auth_deadline(tmp_path, experts):
    d, address = tcp_daemon(tmp_path, experts, "--auth-timeout-ms", "1500")
    try:
        s = raw_tcp(address)
        frame = msgpack.packb([0, 1, "auth", {"token": "y" * 1000}])
        t0 = time.monotonic()
        closed_after = None
        # One byte every 100 ms: activity that must not extend the deadline.
        for i in range(60):
            try:
                s.sendall(frame[i:i + 1])
                s.settimeout(0.1)
                data = s.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                data = b""
            closed_after = time.monotonic() - t0
            if data:
                unp = msgpack.Unpacker(raw=False)
                unp.feed(data)
                msgs = list(unp)
                assert msgs and msgs[0][:2] == [2, "error"], msgs
                assert msgs[0][2]["code"] == "EAUTH"
                assert "1500 ms" in msgs[0][2]["message"]
            break
        s.close()
        assert closed_after is not None, "a trickler was never cut off"
        assert 1.3 <= closed_after <= 4.0, closed_after
        with Client(address, token=TOKEN) as c:  # an honest client is unaffected
            assert c.ping()["pong"] is True
    finally:
        assert d.stop() == 0
    assert "not authenticated within 1500 ms" in d.log_text()


def test_oversized_frame_before_auth_is_refused(tmp_path, experts):
    d, address = tcp_daemon(tmp_path, experts)
    try:
        # 5 KiB: over the pre-auth limit of 4 KiB, far under --frame-limit (4 MiB).
        s = raw_tcp(address)
        s.sendall(msgpack.packb([0, 1, "auth", {"token": "z" * 5000}]))
        msgs = read_until_closed(s, timeout=5)
        s.close()
        assert msgs and msgs[0][:2] == [2, "error"] and msgs[0][2]["code"] == "ELIMIT", msgs
        assert "4096" in msgs[0][2]["message"]
        # An auth call with room to spare fits; after it the full frame limit applies.
        with Client(address, token=TOKEN) as c:
            with pytest.raises(RpcError) as e:
                c.call("ping", {"x" * 10: "a" * (100 << 10)})
            assert e.value.code == "EINVAL"  # decoded and answered: the frame was accepted
            assert c.ping()["pong"] is True
    finally:
        assert d.stop() == 0


def test_repeated_wrong_tokens_close_the_connection(tmp_path, experts):
    d, address = tcp_daemon(tmp_path, experts)
    try:
        with Client(address) as c:
            for attempt in range(2):
                with pytest.raises(RpcError) as e:
                    c.auth("wrong-token-" + "0" * 12 + str(attempt))
                assert e.value.code == "EAUTH"
            c.send_raw(msgpack.packb([0, 9, "auth", {"token": "wrong-token-third-try"}]))
            msgs = read_until_closed(c._sock, timeout=5)
        assert msgs[0][:2] == [1, 9] and msgs[0][2]["code"] == "EAUTH", msgs
        assert msgs[1][:2] == [2, "error"] and "3 wrong tokens" in msgs[1][2]["message"], msgs
        # After a successful auth, a wrong token is an error, and the connection stays
        # authenticated until the third failure.
        with Client(address, token=TOKEN) as c:
            with pytest.raises(RpcError) as e:
                c.auth("not-the-token-at-all-000")
            assert e.value.code == "EAUTH"
            assert c.ping()["pong"] is True
    finally:
        assert d.stop() == 0
    assert "wrong token (attempt 3 of 3): closing the connection" in d.log_text()


# ---- the cache directory ------------------------------------------------------------------


def refused_start(tmp_path, experts, words, extra=()):
    d = Daemon(str(tmp_path), experts, extra=list(extra))
    with pytest.raises(RuntimeError) as e:
        d.start(timeout=20)
    for w in words:
        assert w in str(e.value), (w, str(e.value))
    return str(e.value)


def test_group_writable_cache_dir_is_refused(tmp_path, experts):
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    cache.chmod(0o770)
    refused_start(tmp_path, experts,
                  [str(cache), "mode 0770", "another user could write", "chmod 700"])
    assert stat.S_IMODE(cache.stat().st_mode) == 0o770  # refused, not silently repaired
    assert not (cache / "tasks").exists()


def test_subdirectory_owned_by_another_user_is_refused(tmp_path, experts):
    nobody = pwd.getpwnam("nobody").pw_uid
    cache = tmp_path / "cache"
    (cache / "tasks").mkdir(parents=True, mode=0o700)
    os.chown(cache / "tasks", nobody, -1)
    msg = refused_start(tmp_path, experts, [str(cache / "tasks"), f"uid {nobody}", "chown"])
    print(msg)


def modes_under(cache):
    out = {}
    for root, dirs, files in os.walk(cache):
        for name in dirs + files:
            p = os.path.join(root, name)
            st = os.lstat(p)
            if stat.S_ISSOCK(st.st_mode) or name.endswith(".lock"):
                continue
            out[os.path.relpath(p, cache)] = stat.S_IMODE(st.st_mode)
    return out


@pytest.mark.parametrize("group", [False, True])
def test_cache_modes_private_by_default_group_readable_on_request(tmp_path, experts, group):
    old = os.umask(0o022)
    try:
        d = Daemon(str(tmp_path), experts, extra=["--group-readable"] if group else []).start()
    finally:
        os.umask(old)
    try:
        with d.client() as c:
            job = c.submit("modes", make_examples(n=2, seed=5), cem=SMALL)["job"]
            assert c.wait(job, timeout=60)["status"]["state"] == "done"
    finally:
        assert d.stop() == 0
    modes = modes_under(d.cache_dir)
    want_dir, want_file = (0o750, 0o640) if group else (0o700, 0o600)
    assert stat.S_IMODE(os.stat(d.cache_dir).st_mode) == want_dir
    for sub in ("tasks", "jobs", "factors"):
        assert modes[sub] == want_dir, (sub, oct(modes[sub]))
    files = {p: m for p, m in modes.items() if "/" in p}
    assert any(p.startswith("factors/") for p in files), files
    assert any(p.startswith("tasks/") and p.endswith(".safetensors") for p in files), files
    assert any(p.startswith("jobs/") for p in files), files
    for p, m in files.items():
        assert m == want_file, (p, oct(m))


def test_planted_symlink_in_tasks_does_not_redirect_a_write(tmp_path, experts):
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious\n")
    d = Daemon(str(tmp_path), experts).start()
    try:
        tasks = os.path.join(d.cache_dir, "tasks")
        # The names the writer uses (NAME.safetensors.PID.tmp) and a guess without the pid.
        for name in (f"planted.safetensors.{d.proc.pid}.tmp", "planted.safetensors.tmp",
                     f"planted.zmt.{d.proc.pid}.tmp"):
            os.symlink(victim, os.path.join(tasks, name))
        with open(os.path.join(tasks, f"other.safetensors.{d.proc.pid}.tmp"), "wb") as f:
            f.write(b"planted file")  # a planted regular file is not reused either
        with d.client() as c:
            for task in ("planted", "other"):
                job = c.submit(task, make_examples(n=2, seed=9), cem=SMALL)["job"]
                assert c.wait(job, timeout=60)["status"]["state"] == "done"
                assert c.get(task)["task"] == task
        assert victim.read_bytes() == b"precious\n"
        st = os.lstat(os.path.join(tasks, "planted.safetensors"))
        assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o600
        assert not os.path.lexists(os.path.join(tasks, f"planted.safetensors.{d.proc.pid}.tmp"))
    finally:
        assert d.stop() == 0
