"""The dashboard (zmixd --http, docs/metrics.md) in a real browser: headless Chromium loads the
page against a running daemon and runs its JavaScript; the test reads the DOM it leaves (the
job table and the charts) twice while a job runs and checks that the second shows more
generations than the first, then keeps a screenshot in $ZMIX_ARTIFACTS/dashboard.png.
Run by ctest as e2e_http_dashboard; skipped, saying so, where chromium is not installed."""

import html.parser
import json
import os
import shutil
import subprocess
import tempfile

import pytest

from conftest import MODEL_DIR, ZMIXD, Daemon, free_port, make_examples, wait_for

ADMIN_TOKEN = "dashboard-admin-token-0123456789"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
LONG = {"pop": 16, "iters": 200, "std_tol": 0, "seed": 5, "target_accuracy": 2}
# A planted task (tests/adapt/plant_task: hidden α*, targets the model's own continuations
# under it), so that the screenshot shows a search converging: accuracy rising to 1.
PLANT = os.environ.get("ZMIX_PLANT") or (
    os.path.join(os.path.dirname(ZMIXD), "tests", "adapt", "plant_task") if ZMIXD else "")

pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="chromium is not installed (scripts/install-deps.sh installs it)")


class Dom(html.parser.HTMLParser):
    """What the test reads of the page: job rows, task rows, and each chart's data."""

    def __init__(self, text):
        super().__init__()
        self.jobs, self.tasks, self.charts, self.series = {}, [], {}, {}
        self.summary, self._in = "", None
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "tr" and "data-job" in a:
            self.jobs[int(a["data-job"])] = (a["data-state"], int(a["data-generation"]))
        if tag == "tr" and "data-task" in a:
            self.tasks.append(a["data-task"])
        if tag == "svg" and a.get("id", "").startswith("svg-"):
            self._svg = a["id"][4:]
            self.charts[self._svg] = int(a["data-generations"])
        if tag == "polyline" and "data-series" in a:
            self.series.setdefault(self._svg, []).append(
                (a["data-series"], len(a["points"].split())))
        if tag == "span" and a.get("id") == "summary":
            self._in = "summary"

    def handle_data(self, data):
        if self._in == "summary":
            self.summary += data

    def handle_endtag(self, tag):
        self._in = None


def chromium(url, profile, *extra, budget_ms=3000):
    args = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
            "--no-first-run", "--hide-scrollbars", f"--user-data-dir={profile}",
            f"--virtual-time-budget={budget_ms}", "--window-size=1300,1500", *extra, url]
    r = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


@pytest.fixture
def dashboard_daemon(tmp_path, experts):
    planted = None
    if PLANT and os.access(PLANT, os.X_OK):
        task_dir = tmp_path / "planted"
        task_dir.mkdir()
        planted = json.loads(subprocess.run([PLANT, MODEL_DIR, str(task_dir), "0", "7"],
                                            check=True, capture_output=True, text=True).stdout)
        experts = planted["experts"]
        planted["examples"] = json.load(open(task_dir / "ex.json"))["examples"]
    token = tmp_path / "token"
    token.write_text(ADMIN_TOKEN + "\n")
    token.chmod(0o600)
    port = free_port()
    d = Daemon(str(tmp_path / "d"), experts,
               extra=["--http", f"127.0.0.1:{port}", "--token-file", str(token),
                      "--log-level", "info"]).start()
    d.http = f"http://127.0.0.1:{port}"
    d.planted = planted
    yield d
    assert d.stop() == 0, d.log_text()


def test_dashboard_shows_the_running_job_converging(dashboard_daemon, tmp_path):
    d = dashboard_daemon
    profile = tempfile.mkdtemp(prefix="zmix-chromium-", dir=str(tmp_path))
    # the token travels in the fragment, which the page reads and never sends to the server
    url = f"{d.http}/#token={ADMIN_TOKEN}"
    with d.client() as c:
        done = c.submit("finished-task", make_examples(n=2, seed=21),
                        cem={"pop": 8, "iters": 2, "std_tol": 0})["job"]
        assert c.wait(done, timeout=120)["status"]["state"] == "done"
        examples = d.planted["examples"] if d.planted else make_examples(n=8, prompt_len=32,
                                                                         seed=22)
        job = c.submit("dashboard-task", examples, cem=LONG)["job"]
        try:
            wait_for(lambda: c.status(job)["generation"] >= 2, timeout=120, interval=0.05)
            first = Dom(chromium(url, profile, "--dump-dom"))
            assert first.jobs.get(job, ("", 0))[0] == "running", first.jobs
            gen1 = first.jobs[job][1]
            assert gen1 >= 2
            # the charts show the selected (running) job, one point per generation
            assert set(first.charts) == {"accuracy", "loglik", "alpha"}, first.charts
            assert first.charts["accuracy"] >= 2 and first.charts["alpha"] >= 2
            assert [n for n, _ in first.series["accuracy"]] == \
                ["best so far", "elite mean", "population mean"]
            n_experts = len(d.planted["experts"]) if d.planted else 3
            assert len(first.series["alpha"]) == n_experts  # one per expert
            assert all(pts == first.charts["accuracy"] for _, pts in first.series["accuracy"])
            assert done in first.jobs and first.jobs[done][0] == "done"
            assert "finished-task" in first.tasks
            assert "workers busy" in first.summary

            wait_for(lambda: c.status(job)["generation"] >= gen1 + 2, timeout=120, interval=0.05)
            second = Dom(chromium(url, profile, "--dump-dom"))
            assert second.jobs[job][0] == "running"
            assert second.jobs[job][1] > gen1, (gen1, second.jobs)
            assert second.charts["accuracy"] > first.charts["accuracy"]
            assert second.charts["alpha"] > first.charts["alpha"]

            artifacts = os.environ.get("ZMIX_ARTIFACTS", str(tmp_path))
            os.makedirs(artifacts, exist_ok=True)
            shot = os.path.join(artifacts, "dashboard.png")
            if os.path.exists(shot):
                os.unlink(shot)
            chromium(url, profile, f"--screenshot={shot}")
            assert os.path.getsize(shot) > 10000
        finally:
            c.cancel(job)
            c.wait(job, timeout=60)


def test_dashboard_without_the_token_asks_for_it_and_shows_nothing(dashboard_daemon, tmp_path):
    d = dashboard_daemon
    with d.client() as c:
        job = c.submit("hidden-task", make_examples(n=2, seed=23),
                       cem={"pop": 8, "iters": 2, "std_tol": 0})["job"]
        c.wait(job, timeout=120)
    profile = tempfile.mkdtemp(prefix="zmix-chromium-", dir=str(tmp_path))
    dom = chromium(d.http + "/", profile, "--dump-dom")
    page = Dom(dom)
    assert page.jobs == {} and page.tasks == [] and "hidden-task" not in dom
    assert 'id="login"' in dom and 'id="login" hidden' not in dom
    assert "Authorization: Bearer" in dom  # the daemon's 401 message, shown on the page
