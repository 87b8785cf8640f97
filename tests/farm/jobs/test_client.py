"""Campaigns as Ray Jobs on a real Ray head: submit, stop + resume, cancel, idempotent submit.

Jobs go to the session's private head (`ray start --head`, every port picked free, its
own temp dir: see tests/helpers/cluster.py) through its Jobs API.
"""

from __future__ import annotations

import hashlib
import re
import threading
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from farm.campaign.manifest import Manifest
from farm.cli import app
from farm.jobs.client import (
    cancel_campaign,
    prepare_campaign,
    resume_campaign,
    submit_campaign,
    wait_for,
)
from farm.jobs.inputs import load_campaign
from farm.jobs.loop import render_concurrently
from farm.jobs.options import JobOptions
from farm.jobs.state import campaign_jobs, submission_id
from farm.output.media import probe_mp4
from tests.helpers.campaigns import (
    completed_events,
    count,
    statuses,
    wait_until,
    write_feed,
    write_spec,
)

pytestmark = pytest.mark.slow

runner = CliRunner()


@pytest.fixture(scope="module")
def jobs(ray_cluster, tmp_path_factory):
    """The session head's Jobs API and a storage root: yields (dashboard address, root)."""
    return ray_cluster.dashboard_url, str(tmp_path_factory.mktemp("jobs-root"))


def test_submit_wait_renders_every_variant_once(jobs, tmp_path):
    address, root = jobs
    spec = write_spec(tmp_path / "spec.yaml", "jobs-wait")
    args = ["--address", address, "--root", root]
    result = runner.invoke(app, ["campaign", "submit", str(spec), *args, "--wait"])
    assert result.exit_code == 0, result.output
    cid, sid = re.search(r"campaign (\w+): job (\S+)", result.output).groups()
    assert sid == submission_id(cid, root=root)
    manifest = Manifest.open(root, cid)
    rows = statuses(manifest)
    assert len(rows) == 4
    assert all(r["status"] == "completed" and r["attempt"] == 1 for r in rows.values())
    assert set(completed_events(manifest).values()) == {1}  # each rendered exactly once
    for r in rows.values():
        mp4 = Path(r["output_url"]).read_bytes()
        assert hashlib.sha256(mp4).hexdigest() == r["sha256"]
        info = probe_mp4(mp4)
        assert (info.frames, info.width, info.height) == (r["frames"], r["width"], r["height"])
    # Done: submitting again starts nothing new; the CLI reads it all back.
    again = submit_campaign(load_campaign(spec), address=address, root=root)
    assert again == (cid, sid)
    assert len(campaign_jobs(address, cid, root=root)) == 1
    status = runner.invoke(app, ["campaign", "status", cid, "--root", root, "--address", address])
    assert status.exit_code == 0, status.output
    assert "4 completed" in status.output and "SUCCEEDED" in status.output
    watch = runner.invoke(app, ["campaign", "status", cid, "--root", root, "--watch"])
    assert watch.exit_code == 0 and "0 to go" in watch.output  # nothing pending: returns
    listing = runner.invoke(app, ["campaign", "list", "--root", root])
    assert listing.exit_code == 0 and cid in listing.output
    show = runner.invoke(app, ["manifest", "show", cid, "--root", root, "-n", "2"])
    assert show.exit_code == 0 and "2 of 4 variants" in show.output
    logs = runner.invoke(app, ["campaign", "logs", cid, "--address", address, "--root", root])
    assert logs.exit_code == 0 and "[4/4]" in logs.output and "4 completed" in logs.output


def test_a_feed_runs_as_a_job_like_a_spec(jobs, tmp_path):
    """The CLI submits a CSV feed as it does a spec: one job renders every row."""
    address, root = jobs
    feed = write_feed(tmp_path / "feed.csv")
    args = ["--address", address, "--root", root, "--preset", "tiny", "--wait"]
    result = runner.invoke(app, ["campaign", "submit", str(feed), *args])
    assert result.exit_code == 0, result.output
    cid, sid = re.search(r"campaign (\w+): job (\S+)", result.output).groups()
    assert (cid, sid) == (load_campaign(feed).campaign_id, submission_id(cid, root=root))
    manifest = Manifest.open(root, cid)
    rows = statuses(manifest)
    assert len(rows) == 3 and all(r["status"] == "completed" for r in rows.values())
    for r in rows.values():
        info = probe_mp4(Path(r["output_url"]).read_bytes())
        assert (info.frames, info.width, info.height) == (r["frames"], r["width"], r["height"])
    assert manifest.spec["name"] == "feed" and manifest.runs()[-1]["completed"] == 3


def test_stopped_job_resumes_without_rerendering(jobs, tmp_path):
    address, root = jobs
    spec = load_campaign(write_spec(tmp_path / "spec.yaml", "jobs-resume", products=4, formats=2))
    one = JobOptions(concurrency=1, actors=1)
    cid, sid = submit_campaign(spec, address=address, root=root, options=one)
    assert sid == submission_id(cid, root=root)
    manifest = Manifest.open(root, cid)
    wait_until(lambda: count(manifest, "completed") >= 1, what="a first completed variant")
    from ray.job_submission import JobSubmissionClient

    JobSubmissionClient(address).stop_job(sid)
    assert wait_for(address, sid, timeout=60) == "STOPPED"
    before = {
        vid: (r["sha256"], Path(r["output_url"]).stat().st_mtime_ns)
        for vid, r in statuses(manifest).items()
        if r["status"] == "completed"
    }
    assert 1 <= len(before) < 16, "the job must be stopped mid-way"

    sid2 = resume_campaign(cid, address=address, root=root, options=JobOptions(concurrency=2))
    assert sid2 == submission_id(cid, 2, root=root) == f"{sid}-r2"
    assert resume_campaign(cid, address=address, root=root) == sid2  # still running: same
    assert wait_for(address, sid2, timeout=120) == "SUCCEEDED"
    rows = statuses(manifest)
    assert all(r["status"] == "completed" for r in rows.values())
    for vid, (sha, mtime) in before.items():
        assert rows[vid]["sha256"] == sha
        assert Path(rows[vid]["output_url"]).stat().st_mtime_ns == mtime  # not re-rendered
    assert all(completed_events(manifest)[vid] == 1 for vid in before)


def test_cancel_marks_the_rest_cancelled(jobs, tmp_path):
    address, root = jobs
    spec = load_campaign(write_spec(tmp_path / "spec.yaml", "jobs-cancel", products=4, formats=2))
    one = JobOptions(concurrency=1, actors=1)
    cid, sid = submit_campaign(spec, address=address, root=root, options=one)
    # The same campaign submitted again while its job runs: the same job, not a second one.
    assert submit_campaign(spec, address=address, root=root) == (cid, sid)
    manifest = Manifest.open(root, cid)
    wait_until(lambda: count(manifest, "completed") >= 1, what="a first completed variant")
    args = ["--root", root, "--address", address]
    result = runner.invoke(app, ["campaign", "cancel", cid, *args])
    assert result.exit_code == 0, result.output
    assert wait_for(address, sid, timeout=60) == "SUCCEEDED"
    by_status = manifest.progress().by_status
    assert by_status["completed"] >= 1 and by_status["cancelled"] >= 1
    assert by_status["completed"] + by_status["cancelled"] == 16
    cancelled = [r for r in statuses(manifest).values() if r["status"] == "cancelled"]
    assert all(r["error_code"] == "cancelled" for r in cancelled)
    # A cancelled campaign is not resumed; the CLI says so without a stack trace.
    result = runner.invoke(app, ["campaign", "resume", cid, *args])
    assert result.exit_code == 2 and "cancelled" in result.output
    assert "Traceback" not in result.output
    # Cancelling again (no job running, nothing pending) is harmless.
    assert cancel_campaign(root, cid, address) == "0 pending variants marked cancelled"


# ---- the job's loop in-process (no cluster): retries, backoff, cancel ----------------------


class FlakyExecutor:
    """A LocalExecutor whose first `failures` renders fail with a model error."""

    def __init__(self, failures: int):
        from farm.render.executors import LocalExecutor

        self.inner, self.failures, self.calls = LocalExecutor("tiny"), failures, 0
        self.lock = threading.Lock()

    def latent_shape(self, frames, height, width):
        with self.lock:
            self.calls += 1
            if self.calls <= self.failures:
                raise RuntimeError("transient worker loss")
        return self.inner.latent_shape(frames, height, width)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _local_campaign(tmp_path, name: str) -> tuple[str, Manifest]:
    tmp_path.mkdir(parents=True, exist_ok=True)
    root = str(tmp_path / "root")
    return root, prepare_campaign(load_campaign(write_spec(tmp_path / "spec.yaml", name)), root)


def test_failed_variants_are_retried_with_backoff(tmp_path):
    root, manifest = _local_campaign(tmp_path, "retry")
    start = time.monotonic()
    options = JobOptions(concurrency=2, backoff_s=0.2)
    report = render_concurrently(manifest, FlakyExecutor(failures=2), root, options)
    assert (report.completed, report.failed, report.retries) == (4, 0, 2)
    assert time.monotonic() - start >= 0.2  # waited before retrying
    rows = statuses(manifest).values()
    assert all(r["status"] == "completed" for r in rows)
    assert sorted(r["attempt"] for r in rows) == [1, 1, 2, 2]
    failed = [e for e in manifest.events().to_pylist() if e["status"] == "failed"]
    assert [e["error_code"] for e in failed] == ["model_error", "model_error"]


def test_retries_stop_at_max_attempts_and_skip_hopeless_failures(tmp_path):
    root, manifest = _local_campaign(tmp_path, "exhaust")
    options = JobOptions(max_attempts=2, backoff_s=0.01)
    report = render_concurrently(manifest, FlakyExecutor(failures=100), root, options)
    assert (report.completed, report.failed, report.retries) == (0, 4, 4)
    assert {r["attempt"] for r in statuses(manifest).values()} == {2}
    assert manifest.pending(max_attempts=2).num_rows == 0
    # invalid input fails the same way every time: recorded once, not retried
    root, manifest = _local_campaign(tmp_path / "bad", "invalid")
    from farm.render.executors import LocalExecutor

    report = render_concurrently(manifest, LocalExecutor("tiny"), root, window=4, overlap=4)
    assert (report.failed, report.retries) == (4, 0)
    assert {r["error_code"] for r in statuses(manifest).values()} == {"invalid_input"}


def test_cancel_stops_dispatch_and_marks_the_rest(tmp_path):
    from farm.render.executors import LocalExecutor

    root, manifest = _local_campaign(tmp_path, "cancel-local")
    done: list[str] = []
    report = render_concurrently(
        manifest,
        LocalExecutor("tiny"),
        root,
        JobOptions(concurrency=1),
        cancelled=lambda: len(done) >= 1,
        on_done=lambda row, status, s: done.append(status),
    )
    assert report.stopped_by_cancel and (report.completed, report.cancelled) == (1, 3)
    assert manifest.progress().by_status["cancelled"] == 3
    assert manifest.pending().num_rows == 0


def test_failure_budget_stops_dispatch_and_says_why(tmp_path):
    from farm.campaign.spec import FailureBudget
    from farm.jobs.state import campaign_status
    from farm.render.executors import LocalExecutor

    root, manifest = _local_campaign(tmp_path, "budget")
    once = JobOptions(concurrency=1, max_attempts=1)
    report = render_concurrently(
        manifest,
        FlakyExecutor(failures=100),
        root,
        once,
        failure_budget=FailureBudget(max_failures=2),
    )
    # Two variants failed for good, then nothing new was dispatched: the rest wait.
    assert (report.completed, report.failed) == (0, 2)
    assert "failure_budget.max_failures = 2" in report.stopped_by_budget
    assert manifest.progress().by_status["queued"] == 2
    (run,) = manifest.runs()
    assert run["stopped"] == "failure_budget" and run["epoch"] == report.epoch
    assert campaign_status(root, manifest.campaign_id).last_run["reason"] == run["reason"]
    # Fixed and resumed: the rest render, and the run record says it ran out of work.
    report = render_concurrently(manifest, LocalExecutor("tiny"), root, once)
    assert (report.completed, report.stopped_by_budget) == (2, None)
    assert manifest.runs()[-1]["stopped"] is None


def test_failure_budget_rate_waits_for_enough_finished_variants():
    from farm.campaign.spec import FailureBudget

    budget = FailureBudget(max_failures=None, max_failure_rate=0.25, min_finished=8)
    assert budget.exceeded(failed=3, finished=4) is None  # too few to judge a rate
    assert budget.exceeded(failed=2, finished=8) is None  # 25% is within the budget
    assert "38% > failure_budget.max_failure_rate = 25%" in budget.exceeded(3, 8)
    assert FailureBudget().exceeded(failed=10, finished=10) is None  # 10 < min_finished


# ---- job ids and campaign state (no cluster) -----------------------------------------------


def test_submission_ids_are_per_storage_root(tmp_path, monkeypatch):
    """Two tenants' roots, one campaign id: two job ids; one root however it is spelled."""
    cid = "0123456789abcdef"
    a, b = str(tmp_path / "farm-data"), str(tmp_path / "farm-data" / "tenants" / "globex")
    assert submission_id(cid, root=a) != submission_id(cid, root=b)
    monkeypatch.chdir(tmp_path)
    assert submission_id(cid, root="farm-data") == submission_id(cid, root=a)
    assert submission_id(cid, 3, root=a) == submission_id(cid, root=a) + "-r3"


def test_campaign_state_joins_the_manifest_and_the_job(tmp_path):
    """A dead job with work left is `stalled` and resumable, never `running`."""
    from farm.jobs.state import JobState, campaign_status

    root, manifest = _local_campaign(tmp_path, "state")
    cid = manifest.campaign_id

    def state(status: str | None) -> tuple[str, bool]:
        job = None if status is None else JobState(status, "job", "why")
        st = campaign_status(root, cid, job=job)
        return st.state, st.resumable

    assert state("RUNNING") == ("running", False)
    assert state("PENDING") == ("queued", False)
    assert state("FAILED") == ("stalled", True)
    assert state("STOPPED") == ("stalled", True)
    assert state("SUCCEEDED") == ("stalled", True)  # e.g. stopped by its failure budget
    assert state("NONE") == ("stalled", True)  # never started
    assert state("UNKNOWN") == ("unknown", False)  # the Jobs API could not be asked
    assert state(None) == ("unknown", False)  # not asked
    # `farm campaign status` says it, with the command that resumes
    from farm.cli.common import console, status_view

    with console.capture() as seen:
        console.print(status_view(campaign_status(root, cid, job=JobState("FAILED", "j1"))))
    assert f"job j1 FAILED; stalled (farm campaign resume {cid})" in " ".join(seen.get().split())
    from farm.render.executors import LocalExecutor

    render_concurrently(manifest, LocalExecutor("tiny"), root, JobOptions(concurrency=2))
    assert state("FAILED") == ("finished", False)  # nothing left: the job's end is moot
