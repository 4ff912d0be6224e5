"""zmixd fleets on a real redis-server (docs/fleet.md, proto/FLEET.md): two daemons share a
job's scoring through the Redis stream and get the α a single daemon gets, bit for bit; a
daemon with other experts refuses to join; bad store settings are refused clearly; a member
killed mid-job has its chunks taken over.

redis-server is started by the tests themselves on a loopback port, in a temporary
directory. The tests skip only when redis-server is not installed (scripts/install-deps.sh
installs it)."""

import os
import shutil
import signal
import socket
import struct
import subprocess
import time

import msgpack
import pytest

from conftest import ZMIXD, Daemon, free_port, make_examples, make_experts, wait_for

REDIS_SERVER = shutil.which("redis-server")
pytestmark = pytest.mark.skipif(REDIS_SERVER is None,
                                reason="redis-server not installed (scripts/install-deps.sh)")

# Slow enough that both members get chunks of every generation.
EXAMPLES = dict(n=16, prompt_len=48, target_len=4)
# Chunks of a few tenths of a second: a member can be killed while it holds one.
SLOW_EXAMPLES = dict(n=24, prompt_len=96, target_len=4)
CEM = {"pop": 16, "iters": 5, "elite": 0.25, "std_tol": 0}


class Redis:
    """A redis-server of the test's own, and a minimal RESP client to look into it."""

    def __init__(self, workdir, password=None):
        self.port = free_port()
        self.dir = os.path.join(workdir, "redis")
        os.makedirs(self.dir, exist_ok=True)
        # No persistence: a restart is a Redis that lost everything (the worst case).
        self.args = [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1",
                     "--dir", self.dir, "--save", "", "--appendonly", "no"]
        if password:
            self.args += ["--requirepass", password]
        self.password = password
        self.url = f"redis://127.0.0.1:{self.port}"
        self._start()

    def _start(self):
        self.log = open(os.path.join(self.dir, "redis.log"), "ab")
        self.proc = subprocess.Popen(self.args, stdout=self.log, stderr=self.log)
        wait_for(self._answers, timeout=20, interval=0.05)

    def restart(self):
        self.proc.kill()
        self.proc.wait()
        self.log.close()
        self._start()

    def _answers(self):
        try:
            return self.command("PING") in ("PONG", b"PONG")
        except OSError:
            return False

    def command(self, *args):
        with socket.create_connection(("127.0.0.1", self.port), timeout=5) as s:
            f = s.makefile("rwb")
            if self.password:
                self._send(f, ["AUTH", self.password])
                self._read(f)
            self._send(f, args)
            return self._read(f)

    @staticmethod
    def _send(f, args):
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        f.write(out)
        f.flush()

    def _read(self, f):
        line = f.readline().rstrip(b"\r\n")
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            raise RuntimeError(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            data = f.read(n + 2)[:-2]
            return data
        if kind == b"*":
            n = int(rest)
            return None if n < 0 else [self._read(f) for _ in range(n)]
        raise RuntimeError(f"unexpected reply {line!r}")

    def scored(self):
        """Chunks scored per member (zmix:scored)."""
        flat = self.command("HGETALL", "zmix:scored") or []
        return {flat[i].decode(): int(flat[i + 1]) for i in range(0, len(flat), 2)}

    def pending_by_consumer(self):
        summary = self.command("XPENDING", "zmix:chunks", "zmix:scorers")
        if not summary or not summary[3]:
            return {}
        return {c.decode(): int(n) for c, n in summary[3]}

    def unanswered_held_by(self, pid):
        """Chunks that the member with this pid has read and not answered yet."""
        held = []
        for consumer in self.pending_by_consumer():
            if consumer.split("/")[0].split("-")[-2] != str(pid):
                continue
            for entry_id, *_ in self.command("XPENDING", "zmix:chunks", "zmix:scorers",
                                             "-", "+", 100, consumer) or []:
                entries = self.command("XRANGE", "zmix:chunks", entry_id, entry_id)
                if not entries:
                    continue
                fields = entries[0][1]
                chunk = msgpack.unpackb(fields[fields.index(b"chunk") + 1], raw=False)
                if not self.command("HEXISTS", chunk["results"], chunk["field"]):
                    held.append(chunk["id"])
        return held

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def redis(tmp_path):
    r = Redis(str(tmp_path))
    yield r
    r.stop()


def member_of(pid, scored):
    """Chunks scored by the member whose id carries this pid (HOST-PID-RANDOM)."""
    return sum(n for m, n in scored.items() if m.split("-")[-2] == str(pid))


def run_to_end(d, task, ex, timeout=240):
    with d.client(timeout=timeout + 30) as c:
        job = c.submit(task, ex, cem=CEM)["job"]
        r = c.wait(job, timeout=timeout)
        assert not r["timed_out"], r
        st = r["status"]
        assert st["state"] == "done", st
        return st, c.get(task)


@pytest.fixture(scope="module")
def reference(tmp_path_factory, experts):
    """The job's outcome on one daemon without Redis: what every fleet run must equal."""
    d = Daemon(str(tmp_path_factory.mktemp("single")), experts).start()
    try:
        st, res = run_to_end(d, "fleet", make_examples(seed=31, **EXAMPLES))
    finally:
        assert d.stop() == 0, d.log_text()
    return st, res


def same_outcome(a, b):
    (st_a, res_a), (st_b, res_b) = a, b
    assert st_a["best_alpha"] == st_b["best_alpha"]
    assert st_a["best"] == st_b["best"]
    assert st_a["evaluations"] == st_b["evaluations"]
    assert [float(x) for x in res_a["alpha"]] == [float(x) for x in res_b["alpha"]]
    assert res_a["score"] == res_b["score"]
    assert res_a["expert_scores"] == res_b["expert_scores"]


def fleet_daemon(tmp_path, name, experts, redis, *extra):
    return Daemon(str(tmp_path / name), experts, extra=("--store", redis.url, *extra))


def test_two_daemons_share_a_job_and_match_a_single_daemon(tmp_path, experts, redis, reference):
    a = fleet_daemon(tmp_path, "a", experts, redis).start()
    b = fleet_daemon(tmp_path, "b", experts, redis).start()
    try:
        members = [k for k in redis.command("KEYS", "zmix:member:*") if b":info" not in k]
        assert len(members) == 2
        outcome = run_to_end(a, "fleet", make_examples(seed=31, **EXAMPLES))
        scored = redis.scored()
        by_a, by_b = member_of(a.proc.pid, scored), member_of(b.proc.pid, scored)
        # B took part in a job it was never sent; A's own scorers too.
        assert by_b > 0 and by_a > 0, scored
        same_outcome(outcome, reference)
        full_log = lambda d: open(d.log, errors="replace").read()  # log_text is the tail
        assert "fleet: joined" in full_log(a) and "2 members alive" in full_log(b)
        # Nothing left behind on the stream or pending once the job is over (a scorer
        # acknowledges just after its result, which may end the job first).
        wait_for(lambda: redis.command("XLEN", "zmix:chunks") == 0 and
                 redis.pending_by_consumer() == {}, timeout=10)
        assert not redis.command("KEYS", "zmix:step:*")
        assert not redis.command("KEYS", "zmix:results:*")
    finally:
        assert b.stop() == 0, b.log_text()
        assert a.stop() == 0, a.log_text()
    # A member that stopped leaves the member list.
    assert [k for k in redis.command("KEYS", "zmix:member:*")] == []


def test_other_experts_refuse_to_join(tmp_path, experts, redis):
    a = fleet_daemon(tmp_path, "a", experts, redis).start()
    try:
        other = make_experts(str(tmp_path), seed=99)
        d = fleet_daemon(tmp_path, "other", other, redis)
        with pytest.raises(RuntimeError) as e:
            d.start()
        assert "cannot join the fleet: the experts differ" in str(e.value)
        assert d.proc.returncode == 1
        # The same experts in another order are another expert set too.
        d = fleet_daemon(tmp_path, "reordered", list(reversed(experts)), redis)
        with pytest.raises(RuntimeError) as e:
            d.start()
        assert "the experts differ" in str(e.value)
    finally:
        assert a.stop() == 0, a.log_text()


def zmixd_fails(experts, tmp_path, *args):
    p = subprocess.run([ZMIXD, "--model", Daemon(str(tmp_path), experts).args[2],
                        "--experts", ",".join(experts), "--cache-dir", str(tmp_path / "cache"),
                        "--listen", "unix:" + str(tmp_path / "s.sock"), *args],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0
    return p.returncode, p.stderr


def test_bad_store_settings_are_refused_clearly(tmp_path, experts):
    rc, err = zmixd_fails(experts, tmp_path, "--store", "redis://127.0.0.1:notaport")
    assert rc == 2 and "--store redis://127.0.0.1:notaport: port must be 1..65535" in err
    rc, err = zmixd_fails(experts, tmp_path, "--store", "memcached://x")
    assert rc == 2 and "expected 'local' or redis://HOST:PORT[/DB]" in err
    rc, err = zmixd_fails(experts, tmp_path, "--store", "redis://u:secret@127.0.0.1:1")
    assert rc == 2 and "--store-password-file" in err and "secret" not in err
    port = free_port()
    rc, err = zmixd_fails(experts, tmp_path, "--store", f"redis://127.0.0.1:{port}")
    assert rc == 1 and f"cannot connect to Redis at 127.0.0.1:{port}" in err
    assert "refused" in err.lower()


def test_wrong_or_missing_password(tmp_path, experts):
    r = Redis(str(tmp_path), password="right-password-0123")
    try:
        rc, err = zmixd_fails(experts, tmp_path, "--store", r.url)
        assert "Redis requires a password" in err and "--store-password-file" in err
        wrong = tmp_path / "wrong"
        wrong.write_text("wrong-password\n")
        wrong.chmod(0o600)
        rc, err = zmixd_fails(experts, tmp_path, "--store", r.url,
                              "--store-password-file", str(wrong))
        assert "Redis refused the password" in err and "wrong-password" not in err
        right = tmp_path / "right"
        right.write_text("right-password-0123\n")
        right.chmod(0o600)
        d = Daemon(str(tmp_path / "d"), experts,
                   extra=("--store", r.url, "--store-password-file", str(right))).start()
        assert d.stop() == 0, d.log_text()
    finally:
        r.stop()


@pytest.fixture(scope="module")
def slow_reference(tmp_path_factory, experts):
    d = Daemon(str(tmp_path_factory.mktemp("single-slow")), experts).start()
    try:
        st, res = run_to_end(d, "slow", make_examples(seed=32, **SLOW_EXAMPLES))
    finally:
        assert d.stop() == 0, d.log_text()
    return st, res


def test_killed_member_chunks_are_taken_over(tmp_path, experts, redis, slow_reference):
    # A takes over what B held after 1.5 s; B runs more scorers so that it holds some.
    a = fleet_daemon(tmp_path, "a", experts, redis, "--fleet-claim-ms", "1500").start()
    b = fleet_daemon(tmp_path, "b", experts, redis, "--workers", "3").start()
    try:
        with a.client(timeout=300) as c:
            job = c.submit("slow", make_examples(seed=32, **SLOW_EXAMPLES), cem=CEM)["job"]
            # Killed mid-job, in the middle of chunks the job cannot finish without.
            wait_for(lambda: member_of(b.proc.pid, redis.scored()) > 0 and
                     redis.unanswered_held_by(b.proc.pid), timeout=120, interval=0.002)
            b.kill9()
            r = c.wait(job, timeout=240)
            assert not r["timed_out"], r
            st = r["status"]
            assert st["state"] == "done", st
            outcome = st, c.get("slow")
        same_outcome(outcome, slow_reference)
        with open(a.log, errors="replace") as f:
            assert "took over a chunk pending for more than 1500 ms" in f.read()
    finally:
        if b.proc is not None:
            b.stop()
        assert a.stop() == 0, a.log_text()


def test_redis_restart_without_its_data_mid_job(tmp_path, experts, redis, slow_reference):
    """Redis loses everything mid-job: the members reconnect, the driver publishes its step
    again, and the job ends with the single daemon's α."""
    a = fleet_daemon(tmp_path, "a", experts, redis).start()
    b = fleet_daemon(tmp_path, "b", experts, redis).start()
    try:
        with a.client(timeout=300) as c:
            job = c.submit("slow", make_examples(seed=32, **SLOW_EXAMPLES), cem=CEM)["job"]
            wait_for(lambda: c.status(job).get("generation", 0) >= 1, timeout=120)
            # While a step is out on the stream.
            wait_for(lambda: redis.command("KEYS", "zmix:step:*"), timeout=60, interval=0.002)
            redis.restart()
            r = c.wait(job, timeout=240)
            assert not r["timed_out"], r
            st = r["status"]
            assert st["state"] == "done", st
            outcome = st, c.get("slow")
        same_outcome(outcome, slow_reference)
        with open(a.log, errors="replace") as f:
            log = f.read()
        assert "Redis connection lost" in log
        # Both members are back in the list.
        wait_for(lambda: len([k for k in redis.command("KEYS", "zmix:member:*")
                              if b":info" not in k]) == 2, timeout=10)
    finally:
        assert b.stop() == 0, b.log_text()
        assert a.stop() == 0, a.log_text()


def test_cancel_a_fleet_job(tmp_path, experts, redis):
    a = fleet_daemon(tmp_path, "a", experts, redis).start()
    b = fleet_daemon(tmp_path, "b", experts, redis).start()
    try:
        with a.client(timeout=60) as c:
            job = c.submit("long", make_examples(seed=33, **SLOW_EXAMPLES),
                           cem={"pop": 32, "iters": 500, "std_tol": 0})["job"]
            wait_for(lambda: c.status(job).get("generation", 0) >= 1, timeout=120)
            t0 = time.time()
            c.cancel(job)
            r = c.wait(job, timeout=30)
            assert r["status"]["state"] == "cancelled", r
            assert time.time() - t0 < 5
        # The step's keys are gone: the scorers drop what is left of it.
        wait_for(lambda: not redis.command("KEYS", "zmix:step:*"), timeout=10)
        wait_for(lambda: redis.command("XLEN", "zmix:chunks") == 0, timeout=30)
    finally:
        assert b.stop() == 0, b.log_text()
        assert a.stop() == 0, a.log_text()


def test_an_evaluator_written_from_the_spec_joins_the_group(tmp_path, experts, redis):
    """A scorer in another language, from proto/FLEET.md alone: it reads a chunk through the
    consumer group, finds everything the spec promises, and reports that it cannot score
    it; the job fails with its words, naming it."""
    a = fleet_daemon(tmp_path, "a", experts, redis, "--workers", "1").start()
    try:
        with a.client(timeout=120) as c:
            info = c.info()
            job = c.submit("ext", make_examples(seed=34, **EXAMPLES),
                           cem={"pop": 16, "iters": 500, "std_tol": 0})["job"]
            reply = wait_for(lambda: redis.command(
                "XREADGROUP", "GROUP", "zmix:scorers", "py-eval/0", "COUNT", 1, "BLOCK", 200,
                "STREAMS", "zmix:chunks", ">"), timeout=60)
            entry_id, fields = reply[0][1][0]
            chunk = msgpack.unpackb(fields[fields.index(b"chunk") + 1], raw=False)
            assert chunk["v"] == 1
            assert set(chunk) == {"v", "id", "job", "step_key", "results", "field", "done",
                                  "model_fingerprint", "experts_digest", "examples", "kind",
                                  "n", "dim", "rows", "per_layer", "normalize", "rescale",
                                  "choice_norm", "detail"}
            assert chunk["job"] == job and redis.command("EXISTS", chunk["step_key"]) == 1
            assert chunk["model_fingerprint"] == info["model"]["fingerprint"]
            assert chunk["experts_digest"] == info["experts_digest"]
            assert len(chunk["rows"]) == 4 * chunk["n"] * chunk["dim"]
            if chunk["kind"] == "alpha":
                assert chunk["dim"] == 3  # K experts, shared α
            else:  # the base model's row: z' = 1 over every adapted rank
                assert struct.unpack("<%df" % chunk["dim"], chunk["rows"]) == \
                    (1.0,) * chunk["dim"]
            examples = msgpack.unpackb(redis.command("GET", chunk["examples"]), raw=False)
            assert examples["v"] == 1 and all(
                len(e["prompt"]) == 48 and len(e["target"]) == 4 for e in examples["examples"])
            result = msgpack.packb({"v": 1, "id": chunk["id"], "member": "py-eval",
                                    "ok": False, "error": "no GPU left"})
            assert redis.command("HSETNX", chunk["results"], chunk["field"], result) == 1
            redis.command("RPUSH", chunk["done"], chunk["id"])
            redis.command("XACK", "zmix:chunks", "zmix:scorers", entry_id)
            redis.command("XDEL", "zmix:chunks", entry_id)
            r = c.wait(job, timeout=60)
            st = r["status"]
            assert st["state"] == "failed", st
            assert "scored by fleet member py-eval: no GPU left" in st["reason"], st
    finally:
        assert a.stop() == 0, a.log_text()


def test_an_unreadable_chunk_is_answered_with_a_failure(tmp_path, experts, redis):
    """A chunk of a format this build does not read is not dropped silently: its driver
    gets a failure saying why, instead of waiting for ever."""
    a = fleet_daemon(tmp_path, "a", experts, redis).start()
    try:
        chunk = {"v": 2, "id": "elsewhere-1-0:7:0", "results": "zmix:results:elsewhere-1-0:7",
                 "field": "0", "done": "zmix:done:elsewhere-1-0"}
        redis.command("XADD", "zmix:chunks", "*", "chunk", msgpack.packb(chunk))
        raw = wait_for(lambda: redis.command("HGET", chunk["results"], "0"), timeout=30)
        result = msgpack.unpackb(raw, raw=False)
        assert result["ok"] is False and result["id"] == chunk["id"]
        assert "format 2, this build reads 1" in result["error"]
        # The notification and the acknowledgement follow the result.
        wait_for(lambda: redis.command("LRANGE", chunk["done"], 0, -1) == [chunk["id"].encode()]
                 and redis.command("XLEN", "zmix:chunks") == 0, timeout=10)
    finally:
        assert a.stop() == 0, a.log_text()


def test_steps_are_split_for_the_whole_fleet(tmp_path, experts, redis):
    """A step is cut into a piece per scorer of the fleet (every member's), not per worker of
    the driver: three members of two scorers score a generation of 16 in 6 chunks where one
    member alone uses 4 — with the same α, since scores do not depend on the split."""
    ex = make_examples(seed=31, **EXAMPLES)
    cem = {"pop": 16, "iters": 3, "elite": 0.25, "std_tol": 0, "method": "cem"}

    def run(d, recompute):
        with d.client(timeout=300) as c:
            job = c.submit("split", ex, cem=cem, recompute=recompute)["job"]
            r = c.wait(job, timeout=240)
            assert r["status"]["state"] == "done", r
            return r["status"], c.get("split")

    alone = fleet_daemon(tmp_path, "alone", experts, redis).start()
    try:
        outcome_one = run(alone, False)
        one = sum(redis.scored().values())
    finally:
        assert alone.stop() == 0, alone.log_text()
    redis.command("DEL", "zmix:scored")
    ds = [fleet_daemon(tmp_path, n, experts, redis).start() for n in ("a", "b", "c")]
    try:
        time.sleep(2.5)  # every member's heartbeat has counted the others' scorers
        outcome_three = run(ds[0], True)
        three = sum(redis.scored().values())
    finally:
        for d in ds:
            assert d.stop() == 0, d.log_text()
    same_outcome(outcome_three, outcome_one)
    generations = outcome_one[0]["generation"]
    assert generations == 3
    # A generation of 16: 4 pieces of 4 alone, 6 pieces (3, 3, 3, 3, 3, 1) with the fleet's 6
    # scorers; the other steps are small either way.
    assert three >= one + generations, (one, three, generations)
