"""Tenants (issue 12; PROTOCOL.md §1 "Tenants"): two tenants on one daemon try to read,
cancel and evict each other's work; coalescing stays within a tenant and a tenant's cancel of
a shared job withdraws only its own interest; per-tenant limits; the Unix-socket owner sees
everything."""

import time

import pytest

from conftest import Daemon, free_port, make_examples, wait_for
from zmix_client import Client, RpcError

TOKENS = {"acme": "acme-token-0123456789", "bolt": "bolt-token-9876543210",
          "slow": "slow-token-abcdefghij"}
SMALL = {"pop": 8, "iters": 2, "elite": 0.25, "std_tol": 0}
LONG = {"pop": 32, "iters": 1000, "std_tol": 0, "target_accuracy": 2}
SLOW_EXAMPLES = dict(n=16, prompt_len=48, target_len=4)


@pytest.fixture
def tenant_daemon(tmp_path, experts):
    path = tmp_path / "tenants"
    path.write_text("# name  token  limits\n"
                    f"acme {TOKENS['acme']}\n"
                    f"bolt {TOKENS['bolt']}   # no limits of its own\n"
                    f"slow {TOKENS['slow']} max_running=1 max_queued=1\n")
    path.chmod(0o600)
    port = free_port()
    d = Daemon(str(tmp_path), experts,
               extra=["--listen", f"tcp:127.0.0.1:{port}", "--tenants", str(path)]).start()
    d.tcp = f"tcp:127.0.0.1:{port}"
    yield d
    assert d.stop() == 0, d.log_text()


def as_tenant(d, name):
    c = Client(d.tcp, timeout=30)
    r = c.auth(TOKENS[name])
    assert r == {"authenticated": True, "tenant": name}, r
    return c


def test_tenants_cannot_see_cancel_or_evict_each_others_work(tenant_daemon):
    d = tenant_daemon
    with as_tenant(d, "acme") as a, as_tenant(d, "bolt") as b, d.client() as admin:
        ja = a.submit("shared-name", make_examples(n=2, seed=50), cem=SMALL)
        jb = b.submit("shared-name", make_examples(n=2, seed=51), cem=SMALL)
        assert ja["job"] != jb["job"] and ja["task"] == jb["task"] == "shared-name"
        assert a.wait(ja["job"], timeout=60)["status"]["state"] == "done"
        assert b.wait(jb["job"], timeout=60)["status"]["state"] == "done"

        # every way of reaching another tenant's job answers as if it did not exist
        for call, params in [("status", {"job": ja["job"]}), ("wait", {"job": ja["job"]}),
                             ("cancel", {"job": ja["job"]}), ("history", {"job": ja["job"]}),
                             ("subscribe", {"job": ja["job"]})]:
            with pytest.raises(RpcError) as e:
                b.call(call, params)
            assert e.value.code == "ENOTFOUND", (call, e.value)
        assert [j["job"] for j in b.jobs()] == [jb["job"]]
        assert [j["job"] for j in a.jobs()] == [ja["job"]]
        # a tenant sees its task names as it gave them, and its own tenant name
        assert a.jobs()[0]["task"] == "shared-name" and a.jobs()[0]["tenant"] == "acme"

        # the same task name is two tasks: each gets its own result
        ra, rb = a.get("shared-name", vectors=False), b.get("shared-name", vectors=False)
        assert ra["job"] == ja["job"] and rb["job"] == jb["job"]
        assert ra["examples_digest"] != rb["examples_digest"]
        assert [t["task"] for t in a.tasks()] == ["shared-name"]
        with pytest.raises(RpcError) as e:
            b.get("acme@shared-name")  # a tenant cannot name another's task
        assert e.value.code == "EINVAL" and "'@'" in e.value.message
        assert b.evict("shared-name") == {"evicted": "shared-name", "tenant": "bolt"}
        with pytest.raises(RpcError) as e:
            b.get("shared-name")
        assert e.value.code == "ENOTFOUND"
        assert a.get("shared-name", vectors=False)["job"] == ja["job"]  # untouched

        # the administrator (Unix socket) sees everything, with the tenant named
        listed = {(j["tenant"], j["task"]) for j in admin.jobs()}
        assert {("acme", "shared-name"), ("bolt", "shared-name")} <= listed
        assert admin.get("acme@shared-name", vectors=False)["tenant"] == "acme"
        with pytest.raises(RpcError) as e:
            admin.get("shared-name")  # the administrator's own namespace is separate
        assert e.value.code == "ENOTFOUND"
        # ... and names only tenants the tokens file declares
        for call, params in [("submit", {"task": "nobody@x", "examples": make_examples(n=2)}),
                             ("get", {"task": "nobody@shared-name"}),
                             ("evict", {"task": "nobody@shared-name"})]:
            with pytest.raises(RpcError) as e:
                admin.call(call, params)
            assert e.value.code == "EINVAL" and "no tenant 'nobody'" in e.value.message, e.value


def test_progress_of_another_tenant_is_not_sent(tenant_daemon):
    d = tenant_daemon
    with as_tenant(d, "acme") as a, as_tenant(d, "bolt") as b:
        b.subscribe(True)
        job = a.submit("quiet", make_examples(n=2, seed=52), cem={**SMALL, "iters": 4})["job"]
        assert a.wait(job, timeout=60)["status"]["state"] == "done"
        mine = b.submit("loud", make_examples(n=2, seed=53), cem=SMALL)["job"]
        assert b.wait(mine, timeout=60)["status"]["state"] == "done"
        seen = {n[1]["job"] for n in b.notifications if n[0] == "progress"}
        while True:  # and whatever is still on its way
            try:
                msg = b.read_message(timeout=0.5)
            except OSError:
                break
            if msg[0] == 2 and msg[1] == "progress":
                seen.add(msg[2]["job"])
        assert job not in seen and mine in seen, seen


def test_coalescing_stays_within_a_tenant_and_cancel_withdraws_interest(tenant_daemon):
    d = tenant_daemon
    ex = make_examples(**SLOW_EXAMPLES, seed=54)
    with as_tenant(d, "acme") as a1, as_tenant(d, "acme") as a2, as_tenant(d, "bolt") as b:
        first = a1.submit("big", ex, cem=LONG)
        second = a2.submit("big", ex, cem=LONG)
        other = b.submit("big", ex, cem=LONG)
        assert second["job"] == first["job"] and second["coalesced"] is True
        assert other["job"] != first["job"] and other["coalesced"] is False
        wait_for(lambda: a1.status(first["job"])["state"] == "running")
        r = a2.cancel(first["job"])  # one of two interested submits withdraws
        assert r["withdrawn"] is True and r["interest"] == 1, r
        assert a1.status(first["job"])["state"] == "running"
        assert b.status(other["job"])["state"] in ("queued", "running")
        assert a1.cancel(first["job"]) == {"job": first["job"], "state": "cancelled"}
        assert b.status(other["job"])["state"] in ("queued", "running")  # bolt's is its own
        assert b.cancel(other["job"]) == {"job": other["job"], "state": "cancelled"}


def test_per_tenant_limits(tenant_daemon):
    d = tenant_daemon
    with as_tenant(d, "slow") as s, as_tenant(d, "acme") as a:
        running = s.submit("one", make_examples(**SLOW_EXAMPLES, seed=55), cem=LONG)["job"]
        wait_for(lambda: s.status(running)["state"] == "running")
        waiting = s.submit("two", make_examples(n=2, seed=56), cem=SMALL)["job"]
        with pytest.raises(RpcError) as e:
            s.submit("three", make_examples(n=2, seed=57), cem=SMALL)
        assert e.value.code == "ELIMIT" and "tenant slow" in e.value.message, e.value
        # max_running=1: its second job waits although the daemon has free slots ...
        time.sleep(0.5)
        assert s.status(waiting)["state"] == "queued"
        # ... which other tenants use
        quick = a.submit("quick", make_examples(n=2, seed=58), cem=SMALL)["job"]
        assert a.wait(quick, timeout=60)["status"]["state"] == "done"
        assert s.status(waiting)["state"] == "queued"
        assert s.cancel(running)["state"] == "cancelled"
        assert s.wait(waiting, timeout=60)["status"]["state"] == "done"


def test_tenant_connections_must_authenticate(tenant_daemon):
    d = tenant_daemon
    with Client(d.tcp, timeout=10) as anon:
        with pytest.raises(RpcError) as e:
            anon.jobs()
        assert e.value.code == "EAUTH"
        with pytest.raises(RpcError) as e:
            anon.auth("not-a-tenant-token-000")
        assert e.value.code == "EAUTH"


def test_tenants_file_readable_by_others_is_refused(tmp_path, experts):
    path = tmp_path / "tenants"
    path.write_text(f"acme {TOKENS['acme']}\n")
    path.chmod(0o644)
    d = Daemon(str(tmp_path), experts, extra=["--tenants", str(path)])
    with pytest.raises(RuntimeError) as e:
        d.start(timeout=10)
    assert "chmod 600" in str(e.value) and "tenants" in str(e.value)


def test_tenant_work_stays_separate_after_a_restart(tenant_daemon):
    d = tenant_daemon
    with as_tenant(d, "acme") as a:
        job = a.submit("kept", make_examples(n=2, seed=59), cem=SMALL)["job"]
        assert a.wait(job, timeout=60)["status"]["state"] == "done"
    assert d.stop() == 0
    d.start()
    with as_tenant(d, "acme") as a, as_tenant(d, "bolt") as b:
        assert a.get("kept", vectors=False)["job"] == job
        assert a.status(job)["task"] == "kept"
        with pytest.raises(RpcError) as e:
            b.status(job)
        assert e.value.code == "ENOTFOUND"
        with pytest.raises(RpcError) as e:
            b.get("kept")
        assert e.value.code == "ENOTFOUND"




def test_a_tenant_generates_only_with_its_own_adaptations(tenant_daemon):
    d = tenant_daemon
    with as_tenant(d, "acme") as a, as_tenant(d, "bolt") as b:
        job = a.submit("gen-a", make_examples(n=2, seed=60), cem=SMALL)["job"]
        assert a.wait(job, timeout=60)["status"]["state"] == "done"
        r = a.call("generate", {"task": "gen-a", "prompt": [1, 5, 6], "max_tokens": 3})
        assert r["task"] == "gen-a" and r["tenant"] == "acme" and len(r["tokens"]) == 3, r
        with pytest.raises(RpcError) as e:
            b.call("generate", {"task": "gen-a", "prompt": [1, 5, 6], "max_tokens": 3})
        assert e.value.code == "ENOTFOUND", e.value
        with pytest.raises(RpcError) as e:
            b.call("generate", {"task": "acme@gen-a", "prompt": [1, 5, 6], "max_tokens": 3})
        assert e.value.code == "EINVAL" and "'@'" in e.value.message, e.value
