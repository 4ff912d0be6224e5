"""Faults on the disk under a running zmixd: the cache directory fills up in the middle of a
job (a small tmpfs; skipped when this process may not mount one), and a cache file is
corrupted while the daemon is down."""

import errno
import os
import signal
import subprocess

import pytest

from zmix_e2e_fixtures import Daemon, make_examples, wait_for
from zmix_client import RpcError

SMALL = {"pop": 12, "iters": 3, "std_tol": 0}


def plain_z(result):
    """z' as lists of floats: the client gives NumPy arrays when NumPy is installed, and
    comparing dicts of arrays with == is an error."""
    return {name: [float(v) for v in values] for name, values in result["z"].items()}


def fill_disk(directory):
    """Writes a file until the filesystem is full; returns its path."""
    path = os.path.join(directory, "filler")
    with open(path, "wb", buffering=0) as f:
        block = b"\0" * 65536
        while True:
            try:
                f.write(block)
            except OSError as e:
                assert e.errno == errno.ENOSPC, e
                break
        while True:  # the last partial page too
            try:
                f.write(b"\0" * 512)
            except OSError:
                break
    return path


@pytest.fixture
def small_fs(tmp_path):
    mnt = tmp_path / "cache"
    mnt.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8m,mode=0700", "tmpfs", str(mnt)],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a tmpfs here: " + r.stderr.strip())
    yield str(mnt)
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_full_disk_during_a_cache_write(tmp_path, experts, small_fs):
    d = Daemon(str(tmp_path), experts)
    assert d.cache_dir == small_fs
    d.start()
    try:
        with d.client() as c:
            before = c.submit("before", make_examples(n=2, seed=1), cem=SMALL)["job"]
            assert c.wait(before, timeout=60)["status"]["state"] == "done"
            # A job long enough to fill the disk under it while it runs.
            job = c.submit("full", make_examples(n=16, prompt_len=48, target_len=4, seed=2),
                           cem={"pop": 16, "iters": 6, "std_tol": 0})["job"]
            wait_for(lambda: c.status(job)["generation"] >= 1, timeout=60, interval=0.002)
            filler = fill_disk(small_fs)
            w = c.wait(job, timeout=120)
            st = w["status"]
            # The job finishes; its result could not be written and says so.
            assert st["state"] == "done", st
            assert "not saved" in st["warning"], st
            stats = c.stats()
            assert stats["cache"]["write_errors"] >= 1 and stats["cache"]["unpersisted"] >= 1
            # ... and is served from memory, while the daemon keeps answering.
            r = c.get("full")
            assert r["job"] == job and len(r["alpha"]) == 3
            alpha = r["alpha"]
            assert c.get("before")["job"] == before
            assert c.ping()["pong"] is True
            # A new submit cannot be made durable on a full disk: refused with a reason.
            with pytest.raises(RpcError) as e:
                c.submit("refused", make_examples(n=2, seed=3), cem=SMALL)
            assert e.value.code in ("EIO", "ENOSPC", "ELIMIT"), e.value
            assert "space" in str(e.value).lower() or "write" in str(e.value).lower()
        assert "kept in memory only" in d.log_text()
        # Space comes back: the result reaches the disk (at shutdown at the latest, or by
        # redoing the job from its checkpoint after the restart) and survives.
        os.unlink(filler)
    finally:
        assert d.stop() == 0
    d.start()
    try:
        with d.client() as c:
            w = c.wait(job, timeout=120)
            assert w["status"]["state"] == "done", w
            assert c.get("full")["alpha"] == alpha
            assert c.get("before")["job"] == before
    finally:
        assert d.stop() == 0


def test_corrupt_cache_files_are_reported_and_skipped(tmp_path, experts):
    d = Daemon(str(tmp_path), experts).start()
    try:
        with d.client() as c:
            jobs = {t: c.submit(t, make_examples(n=2, seed=i), cem=SMALL)["job"]
                    for i, t in enumerate(["flipped", "truncated", "intact"])}
            for job in jobs.values():
                assert c.wait(job, timeout=60)["status"]["state"] == "done"
            intact = c.get("intact")
    finally:
        assert d.stop() == 0
    tasks = os.path.join(d.cache_dir, "tasks")
    with open(os.path.join(tasks, "flipped.zmt"), "r+b") as f:
        size = f.seek(0, os.SEEK_END)
        f.seek(size // 2)
        b = f.read(1)
        f.seek(size // 2)
        f.write(bytes([b[0] ^ 0x10]))
    with open(os.path.join(tasks, "truncated.zmt"), "r+b") as f:
        f.truncate(f.seek(0, os.SEEK_END) - 7)
    d.start()
    try:
        with d.client() as c:
            for t in ("flipped", "truncated"):
                with pytest.raises(RpcError) as e:
                    c.get(t)
                assert e.value.code == "ENOTFOUND"
                assert t not in [x["task"] for x in c.tasks()]
            r = c.get("intact")
            assert r["alpha"] == intact["alpha"] and plain_z(r) == plain_z(intact)
            # A bad file is not fatal for the task either: submitting it again recomputes.
            again = c.submit("flipped", make_examples(n=2, seed=0), cem=SMALL)
            assert again["cached"] is False
            assert c.wait(again["job"], timeout=60)["status"]["state"] == "done"
        log = d.log_text()
        assert "flipped.zmt" in log and "checksum" in log, log
        assert "truncated.zmt" in log, log
        assert os.path.exists(os.path.join(tasks, "flipped.zmt.corrupt"))
        assert os.path.exists(os.path.join(tasks, "truncated.zmt.corrupt"))
    finally:
        assert d.stop() == 0
