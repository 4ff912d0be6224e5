"""The command line as a tenant (docs/daemon.md, "Tenants"): `zmix --connect tcp:... --token-file`
acts for the token's tenant, sees only its own jobs and tasks, and a cancel of a job its other
submits still share says it was withdrawn; the socket owner names the task TENANT@TASK."""

from cli_fixtures import requires_cli, zmix, run, ZMIX
from conftest import Daemon, free_port, make_examples, wait_for
from zmix_client import Client

pytestmark = requires_cli

TOKENS = {"acme": "acme-token-0123456789", "bolt": "bolt-token-9876543210"}
LONG = {"pop": 32, "iters": 1000, "std_tol": 0, "target_accuracy": 2}
SMALL = {"pop": 8, "iters": 2, "elite": 0.25, "std_tol": 0}


def test_cli_as_a_tenant(tmp_path, experts):
    tenants = tmp_path / "tenants"
    tenants.write_text("".join(f"{n} {t}\n" for n, t in TOKENS.items()))
    tenants.chmod(0o600)
    port = free_port()
    tcp = f"tcp:127.0.0.1:{port}"
    d = Daemon(str(tmp_path), experts,
               extra=["--listen", f"tcp:127.0.0.1:{port}", "--tenants", str(tenants)]).start()
    token_files = {}
    for name, tok in TOKENS.items():
        token_files[name] = tmp_path / f"{name}.token"
        token_files[name].write_text(tok + "\n")
        token_files[name].chmod(0o600)

    def as_tenant(name, *args):
        return run([ZMIX, *args, "--connect", tcp, "--token-file", str(token_files[name])])

    try:
        ex = make_examples(n=16, prompt_len=48, target_len=4, seed=70)
        with Client(tcp) as a1, Client(tcp) as a2:
            a1.auth(TOKENS["acme"])
            a2.auth(TOKENS["acme"])
            job = a1.submit("shared", ex, cem=LONG)["job"]
            assert a2.submit("shared", ex, cem=LONG)["coalesced"] is True
            wait_for(lambda: a1.status(job)["state"] == "running")
            small = a1.submit("small", make_examples(n=2, seed=71), cem=SMALL)["job"]
            assert a1.wait(small, timeout=60)["status"]["state"] == "done"

        r = as_tenant("bolt", "jobs")
        assert r.rc == 0 and "shared" not in r.out and "small" not in r.out, r
        r = as_tenant("bolt", "status", str(job))
        assert r.rc == 1 and f"job {job} not found" in r.err, r
        r = as_tenant("bolt", "get", "small")
        assert r.rc != 0 and "not cached" in r.err, r

        r = as_tenant("acme", "get", "small")
        assert r.rc == 0 and "task small" in r.out, r
        r = as_tenant("acme", "cancel", str(job))
        assert r.rc == 0 and r.out == f"job {job} withdrawn\n", r
        r = as_tenant("acme", "cancel", str(job))
        assert r.rc == 0 and r.out == f"job {job} cancelled\n", r

        # the socket owner is the administrator: it sees acme's task under acme@small
        r = zmix(d, "get", "acme@small")
        assert r.rc == 0 and "task small" in r.out, r
        r = zmix(d, "tasks", "--json")
        assert [(t["tenant"], t["task"]) for t in r.json()["tasks"]] == [("acme", "small")], r
    finally:
        assert d.stop() == 0, d.log_text()
