"""The fleet's job store (docs/fleet.md "Jobs in a fleet", proto/FLEET.md §7): jobs live in
Redis under a driving lease, so that any member answers for any job, a job whose driver dies
or stalls is resumed by another member from its last checkpoint with the α of an
uninterrupted run, a stalled driver's late writes are refused, and an acknowledged job
survives a restart of Redis (append-only file, fsync always).

Each test starts its own redis-server on a loopback port and several zmixd on stories260K."""

import os
import signal
import time
import urllib.request

import pytest

from conftest import Daemon, free_port, make_examples, wait_for
from test_fleet import REDIS_SERVER, Redis

pytestmark = pytest.mark.skipif(REDIS_SERVER is None,
                                reason="redis-server not installed (scripts/install-deps.sh)")

# Generations of a second or so: a driver can be killed or stopped in the middle of one.
EXAMPLES = dict(n=24, prompt_len=96, target_len=4)
CEM = {"pop": 16, "iters": 6, "elite": 0.25, "std_tol": 0}
LEASE = ("--fleet-lease-ms", "1500", "--fleet-claim-ms", "1500")


class DurableRedis(Redis):
    """Redis configured as docs/fleet.md says: every write on disk before it is answered."""

    def __init__(self, workdir):
        super().__init__(workdir)
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self.args = [a for a in self.args]
        i = self.args.index("--appendonly")
        self.args[i + 1] = "yes"
        self.args += ["--appendfsync", "always"]
        self._start()

    def _answers(self):
        # A Redis replaying its append-only file answers LOADING until it is done.
        try:
            self.command("GET", "zmix:job:next")
            return True
        except OSError:
            return False
        except RuntimeError as e:
            if str(e).startswith("LOADING"):
                return False
            raise


@pytest.fixture
def redis(tmp_path):
    r = Redis(str(tmp_path))
    yield r
    r.stop()


@pytest.fixture
def durable_redis(tmp_path):
    r = DurableRedis(str(tmp_path))
    yield r
    r.stop()


def run_single(tmp_path_factory, experts, task, seed):
    d = Daemon(str(tmp_path_factory.mktemp("single")), experts).start()
    try:
        with d.client(timeout=300) as c:
            assert c.info()["store"] == {"kind": "local"} and c.stats()["fleet"] is None
            job = c.submit(task, make_examples(seed=seed, **EXAMPLES), cem=CEM)["job"]
            r = c.wait(job, timeout=240)
            assert r["status"]["state"] == "done", r
            return r["status"], c.get(task)
    finally:
        assert d.stop() == 0, d.log_text()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, experts):
    """The job's outcome on one daemon without Redis, uninterrupted."""
    return run_single(tmp_path_factory, experts, "moved", 41)


@pytest.fixture(scope="module")
def reference2(tmp_path_factory, experts):
    return run_single(tmp_path_factory, experts, "moved2", 45)


def same_alpha(status, result, reference):
    ref_status, ref_result = reference
    assert status["best_alpha"] == ref_status["best_alpha"]
    assert status["best"] == ref_status["best"]
    assert [float(x) for x in result["alpha"]] == [float(x) for x in ref_result["alpha"]]
    assert result["score"] == ref_result["score"]


def member(tmp_path, name, experts, redis, *extra):
    return Daemon(str(tmp_path / name), experts, extra=("--store", redis.url, *extra))


def job_field(redis, job, field):
    v = redis.command("HGET", f"zmix:job:{job}", field)
    return v.decode() if isinstance(v, bytes) else v


def driver_pid(redis, job):
    """The pid of the member whose lease drives the job (member ids are HOST-PID-RANDOM)."""
    lease = redis.command("GET", f"zmix:lease:{job}")
    if not lease:
        return None
    return int(lease.decode().split(" ", 1)[1].split("-")[-2])


def generation(redis, job):
    g = job_field(redis, job, "ckpt_gen")
    return int(g) if g else -1


def test_any_member_answers_for_any_job(tmp_path, experts, redis, reference):
    """A client of B follows, waits for and reads a job A drives, and cancels another."""
    a = member(tmp_path, "a", experts, redis, *LEASE).start()
    b = member(tmp_path, "b", experts, redis, *LEASE).start()
    try:
        with a.client(timeout=300) as ca, b.client(timeout=300) as cb:
            job = ca.submit("moved", make_examples(seed=41, **EXAMPLES), cem=CEM)["job"]
            assert driver_pid(redis, job) == a.proc.pid
            # The same submit through B joins A's job (fleet-wide coalescing).
            again = cb.submit("moved", make_examples(seed=41, **EXAMPLES), cem=CEM)
            assert again["job"] == job and again["coalesced"] and not again["cached"], again
            # B knows the job from the start, lists it, and sees it progress.
            st = cb.status(job)
            assert st["state"] in ("queued", "running") and st["job"] == job, st
            listed = {j["job"]: j for j in cb.jobs()}
            assert listed[job]["task"] == "moved" and listed[job]["state"] in ("queued", "running")
            # Progress notifications through B, for a job A drives.
            with b.client(timeout=60) as follower:
                assert follower.subscribe(job=job) == {"subscribed": True, "job": job}
                gens = set()
                while not gens or max(gens) < 2:
                    msg = follower.read_message(timeout=60)
                    assert msg[0] == 2 and msg[1] == "progress" and msg[2]["job"] == job, msg
                    gens.add(msg[2]["generation"])
                assert len(gens) >= 2, gens  # one per generation seen, not one in all
            with b.client(timeout=60) as everyone:
                everyone.subscribe()
                msg = everyone.read_message(timeout=60)
                assert msg[1] == "progress" and msg[2]["job"] == job, msg
            r = cb.wait(job, timeout=240)
            assert not r["timed_out"] and r["status"]["state"] == "done", r
            # B's answer is A's, and so is the history of the ended job.
            assert r["status"]["best_alpha"] == ca.status(job)["best_alpha"]
            hist_b, hist_a = cb.call("history", {"job": job}), ca.call("history", {"job": job})
            assert hist_b == hist_a and len(hist_b["history"]) == r["status"]["generation"]
            same_alpha(r["status"], ca.get("moved"), reference)
            # A wait on B that times out says so, with the status so far.
            # Long enough (60 × the budget) to be running still when the cancel arrives.
            other = ca.submit("other", make_examples(seed=42, **EXAMPLES),
                              cem=dict(CEM, iters=360))["job"]
            r = cb.wait(other, timeout=0.3)
            assert r["timed_out"] and r["status"]["job"] == other, r
            # A cancel through B ends the job A drives.
            c = cb.cancel(other)
            assert c == {"job": other, "state": "cancelled"}, c
            assert ca.status(other)["state"] == "cancelled"
            assert cb.wait(other, timeout=10)["status"]["state"] == "cancelled"
            # A job whose end is in Redis without its final status (its driver died between
            # the two writes) is answered as ended, after a grace period, with the end's state.
            redis.command("HDEL", f"zmix:job:{job}", "final")
            redis.command("HSET", f"zmix:job:{job}", "status", b"\x81\xa5state\xa7running")
            t0 = time.time()
            r = cb.wait(job, timeout=30)
            assert not r["timed_out"] and r["status"]["state"] == "done", r
            assert 1.5 <= time.time() - t0 < 10
            assert cb.status(job)["state"] == "done"
            # A job that exists nowhere is not found, on any member.
            with pytest.raises(Exception, match="no job 999"):
                cb.status(999)
            with pytest.raises(Exception, match="no job 999"):
                cb.subscribe(job=999)
            # Both members list the fleet's jobs alike.
            assert [(j["job"], j["state"]) for j in cb.jobs()] == \
                [(j["job"], j["state"]) for j in ca.jobs()] == [(other, "cancelled"), (job, "done")]
            assert [j["job"] for j in cb.jobs(state="done")] == [job]
    finally:
        assert b.stop() == 0, b.log_text()
        assert a.stop() == 0, a.log_text()


def test_killed_drivers_jobs_finish_once_elsewhere(tmp_path, experts, redis, reference,
                                                   reference2):
    """kill -9 the driver of two jobs mid-generation, then the new driver of the first: each
    time other members claim the leases and resume from the last checkpoints; every job ends
    exactly once, with the α of an uninterrupted run."""
    ds = [member(tmp_path, n, experts, redis, *LEASE).start() for n in ("a", "b", "c")]
    by_pid = {d.proc.pid: d for d in ds}
    try:
        with ds[0].client(timeout=300) as c:
            job = c.submit("moved", make_examples(seed=41, **EXAMPLES), cem=CEM)["job"]
            job2 = c.submit("moved2", make_examples(seed=45, **EXAMPLES), cem=CEM)["job"]
        assert driver_pid(redis, job) == driver_pid(redis, job2) == ds[0].proc.pid
        killed = []
        for round_ in range(2):
            pid = driver_pid(redis, job)
            assert pid in by_pid and pid not in killed
            g = generation(redis, job)
            # In the middle of a generation: after a checkpoint, before the next.
            wait_for(lambda: generation(redis, job) > g, timeout=120, interval=0.01)
            time.sleep(0.3)
            by_pid[pid].kill9()
            killed.append(pid)
            wait_for(lambda: driver_pid(redis, job) not in (None, *killed), timeout=30)
            assert int(job_field(redis, job, "epoch")) == round_ + 2
        survivor = next(d for d in ds if d.proc is not None)
        with survivor.client(timeout=300) as c:
            for j, task, ref in ((job, "moved", reference), (job2, "moved2", reference2)):
                r = c.wait(j, timeout=240)
                assert not r["timed_out"] and r["status"]["state"] == "done", r
                same_alpha(r["status"], c.get(task), ref)
        log = open(survivor.log, errors="replace").read()
        assert f"job {job}: its driver's lease expired; resuming it here" in log
        # Ended once: one member wrote each end (the logs of all three say so once), and
        # nothing is left open or leased.
        logs = "".join(open(d.log, errors="replace").read() for d in ds)
        for j in (job, job2):
            assert logs.count(f"job {j}: done (") == 1, j
            assert redis.command("GET", f"zmix:lease:{j}") is None
            assert job_field(redis, j, "state") == "done"
        assert redis.command("ZRANGE", "zmix:jobs:open", "0", "-1") == []
    finally:
        for d in ds:
            if d.proc is not None:
                assert d.stop() == 0, d.log_text()


def test_stalled_driver_is_fenced(tmp_path, experts, redis, reference):
    """SIGSTOP the driver past its lease: another member takes the job over; SIGCONT: the
    stalled member's late writes are refused, and the result is the uninterrupted run's."""
    http_port = free_port()
    a = member(tmp_path, "a", experts, redis, *LEASE).start()
    b = member(tmp_path, "b", experts, redis, *LEASE, "--http", f"127.0.0.1:{http_port}").start()
    try:
        with a.client(timeout=300) as c:
            job = c.submit("moved", make_examples(seed=41, **EXAMPLES), cem=CEM)["job"]
        wait_for(lambda: generation(redis, job) >= 2, timeout=120, interval=0.01)
        a.proc.send_signal(signal.SIGSTOP)
        try:
            wait_for(lambda: driver_pid(redis, job) == b.proc.pid, timeout=30)
            wait_for(lambda: generation(redis, job) >= 3, timeout=60)
        finally:
            a.proc.send_signal(signal.SIGCONT)
        with b.client(timeout=300) as cb:
            r = cb.wait(job, timeout=240)
            assert not r["timed_out"] and r["status"]["state"] == "done", r
            same_alpha(r["status"], cb.get("moved"), reference)
        # A learns that it lost the job, and drops it without writing anything of its own.
        wait_for(lambda: "dropped here (another member drives it)" in
                 open(a.log, errors="replace").read(), timeout=30)
        log = open(a.log, errors="replace").read()
        assert "lease of epoch 1 is gone" in log or "FENCED" in log, log[-3000:]
        assert int(job_field(redis, job, "epoch")) == 2
        with a.client() as c:  # and answers for it from the fleet, like any member
            assert c.status(job)["state"] == "done"
            assert c.stats()["fleet"]["leases_lost"] == 1
        with b.client() as cb:
            assert cb.stats()["fleet"]["jobs_claimed"] == 1
            store = cb.info()["store"]
            assert store["kind"] == "redis" and store["url"] == redis.url, store
            assert store["lease_ms"] == 1500 and f"-{b.proc.pid}-" in store["member"], store
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics").read().decode()
        assert "\nzmix_fleet_jobs_claimed_total 1\n" in metrics
        assert "\nzmix_fleet_leases_lost_total 0\n" in metrics
    finally:
        assert b.stop() == 0, b.log_text()
        assert a.stop() == 0, a.log_text()


def test_acknowledged_jobs_survive_a_redis_restart(tmp_path, experts, durable_redis, reference):
    """Redis killed (SIGKILL) and restarted from its append-only file mid-job: the jobs
    acknowledged before are all there and finish, the running one with the uninterrupted
    run's α."""
    a = member(tmp_path, "a", experts, durable_redis).start()
    b = member(tmp_path, "b", experts, durable_redis).start()
    try:
        with a.client(timeout=300) as c:
            job = c.submit("moved", make_examples(seed=41, **EXAMPLES), cem=CEM)["job"]
            queued = c.submit("later", make_examples(seed=43, n=8), cem=CEM)["job"]
            wait_for(lambda: generation(durable_redis, job) >= 1, timeout=120)
            durable_redis.restart()
            assert job_field(durable_redis, queued, "state") in ("queued", "running", "done")
            r = c.wait(job, timeout=240)
            assert not r["timed_out"] and r["status"]["state"] == "done", r
            same_alpha(r["status"], c.get("moved"), reference)
        with b.client(timeout=300) as cb:
            r = cb.wait(queued, timeout=240)
            assert r["status"]["state"] == "done", r
    finally:
        assert b.stop() == 0, b.log_text()
        assert a.stop() == 0, a.log_text()


def test_the_task_cache_is_the_fleets(tmp_path, experts, redis):
    """A result finished by A is B's too: get, tasks and a resubmit's cache hit through B; an
    evict through B is seen by A."""
    a = member(tmp_path, "a", experts, redis).start()
    b = member(tmp_path, "b", experts, redis).start()
    ex = make_examples(seed=44, n=8)
    try:
        with a.client(timeout=300) as ca, b.client(timeout=300) as cb:
            job = ca.submit("shared", ex, cem=CEM)["job"]
            assert ca.wait(job, timeout=240)["status"]["state"] == "done"
            mine = ca.get("shared")
            theirs = cb.get("shared")
            assert [float(x) for x in theirs["alpha"]] == [float(x) for x in mine["alpha"]]
            assert theirs["score"] == mine["score"] and theirs["job"] == job
            listed = {t["task"]: t for t in cb.tasks()}
            assert listed["shared"]["job"] == job and listed["shared"]["current"], listed
            hit = cb.submit("shared", ex, cem=CEM)
            assert hit["cached"] and hit["job"] == job, hit
            # Evicted through B: gone for A too, though A computed it and has its own copy.
            assert cb.evict("shared")["evicted"] == "shared"
            with pytest.raises(Exception, match="not cached|no task|not found"):
                ca.get("shared")
            assert "shared" not in {t["task"] for t in ca.tasks()}
            again = ca.submit("shared", ex, cem=CEM)
            assert not again["cached"] and again["job"] != job, again
            assert ca.wait(again["job"], timeout=240)["status"]["state"] == "done"
            # The same inputs give the same result, wherever it is computed.
            assert [float(x) for x in cb.get("shared")["alpha"]] == \
                [float(x) for x in mine["alpha"]]
    finally:
        assert b.stop() == 0, b.log_text()
        assert a.stop() == 0, a.log_text()


def test_a_stopped_members_jobs_go_to_members_with_room(tmp_path, experts, redis, reference):
    """SIGTERM gives a member's leases up: its running and queued jobs are claimed at once by
    a member with free running slots, and end as they would have."""
    a = member(tmp_path, "a", experts, redis, *LEASE, "--max-running", "1").start()
    b = member(tmp_path, "b", experts, redis, *LEASE, "--max-running", "4").start()
    try:
        with a.client(timeout=300) as c:
            jobs = [c.submit("moved", make_examples(seed=41, **EXAMPLES), cem=CEM)["job"]]
            jobs += [c.submit(f"t{i}", make_examples(seed=50 + i, n=6), cem=CEM)["job"]
                     for i in range(2)]
        wait_for(lambda: generation(redis, jobs[0]) >= 1, timeout=120)
        assert [job_field(redis, j, "state") for j in jobs[1:]] == ["queued", "queued"]
        assert a.stop() == 0, a.log_text()
        with b.client(timeout=300) as cb:
            for j in jobs:
                r = cb.wait(j, timeout=240)
                assert r["status"]["state"] == "done", r
            same_alpha(cb.status(jobs[0]), cb.get("moved"), reference)
        log = open(b.log, errors="replace").read()
        for j in jobs:
            assert f"job {j}: its driver's lease expired; resuming it here" in log, j
    finally:
        assert b.stop() == 0, b.log_text()
        a.stop()


def test_tenants_stay_apart_across_members(tmp_path, experts, redis):
    """A tenant cannot see, follow or cancel another tenant's job through another member: it
    does not exist for it (PROTOCOL.md §5, Tenants), and the job runs on."""
    from zmix_client import Client
    tokens = {"acme": "acme-token-0123456789", "bolt": "bolt-token-9876543210"}
    path = tmp_path / "tenants"
    path.write_text("".join(f"{n} {t}\n" for n, t in tokens.items()))
    path.chmod(0o600)
    ports = [free_port(), free_port()]
    ds = [member(tmp_path, n, experts, redis, *LEASE, "--tenants", str(path), "--listen",
                 f"tcp:127.0.0.1:{p}").start() for n, p in zip("ab", ports)]

    def as_tenant(i, name):
        c = Client(f"tcp:127.0.0.1:{ports[i]}", timeout=60)
        assert c.auth(tokens[name])["tenant"] == name
        return c

    try:
        with as_tenant(0, "acme") as acme, as_tenant(1, "bolt") as bolt:
            job = acme.submit("mine", make_examples(seed=46, **EXAMPLES),
                              cem=dict(CEM, iters=360))["job"]
            for call in (lambda: bolt.status(job), lambda: bolt.cancel(job),
                         lambda: bolt.subscribe(job=job), lambda: bolt.wait(job, timeout=0)):
                with pytest.raises(Exception, match=f"no job {job}"):
                    call()
            assert job not in [j["job"] for j in bolt.jobs()]
            assert job_field(redis, job, "cancel") is None  # the cancel never reached Redis
            assert acme.status(job)["state"] in ("queued", "running")
            with as_tenant(1, "acme") as acme_b:  # the owner, through the other member
                assert acme_b.cancel(job) == {"job": job, "state": "cancelled"}
    finally:
        for d in ds:
            assert d.stop() == 0, d.log_text()


def test_the_dashboard_shows_the_fleets_jobs(tmp_path, experts, redis):
    """A member's dashboard (/api/jobs) lists the jobs every member drives, each with its whole
    status as /api/jobs/ID gives it, and keeps ?limit= for ended ones."""
    port = free_port()
    a = member(tmp_path, "a", experts, redis, *LEASE, "--http", f"127.0.0.1:{port}").start()
    b = member(tmp_path, "b", experts, redis, *LEASE).start()

    def api(path):
        import json
        return json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}{path}").read())

    try:
        with b.client(timeout=300) as cb:
            first = cb.submit("on-b", make_examples(seed=43, **EXAMPLES), cem=CEM)["job"]
            assert driver_pid(redis, first) == b.proc.pid
            listed = wait_for(lambda: [j for j in api("/api/jobs") if j["job"] == first
                                       and j.get("generation", 0) >= 1], timeout=120)
            assert listed[0]["task"] == "on-b" and listed[0]["state"] == "running", listed
            # the whole status, not the brief: as B, which drives it, tells it
            assert listed[0]["max_generations"] == cb.status(first)["max_generations"], listed
            assert cb.wait(first, timeout=240)["status"]["state"] == "done"
            second = cb.submit("on-b-2", make_examples(seed=44, **EXAMPLES), cem=CEM)["job"]
            assert cb.wait(second, timeout=240)["status"]["state"] == "done"
            want = cb.status(first)
            jobs = {j["job"]: j for j in api("/api/jobs")}
            assert set(jobs) == {first, second}, jobs
            assert jobs[first]["best_alpha"] == want["best_alpha"], (jobs[first], want)
            assert jobs[first]["best"] == want["best"]
            assert api(f"/api/jobs/{first}")["best_alpha"] == want["best_alpha"]
            assert [j["job"] for j in api("/api/jobs?limit=1")] == [second]
    finally:
        assert b.stop() == 0, b.log_text()
        assert a.stop() == 0, a.log_text()
