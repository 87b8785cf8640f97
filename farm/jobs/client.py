"""Campaigns as Ray Jobs: submit, resume, cancel, watch; and the job's bounded-concurrency loop.

One campaign job at a time per campaign. Its submission id is derived from the campaign id
(itself a content hash of the spec): `campaign-{id}` for the first run, `campaign-{id}-r2`,
`-r3`, ... for each resume. Submitting while a job of the campaign is PENDING or RUNNING
returns that job instead of starting a second one (Ray refuses a duplicate submission id,
which also settles two submits racing each other). Once the latest job has ended, a submit
or resume with variants still pending starts the next `-rN`; the manifest decides what is
pending, so a resumed job never re-renders a finished variant.

Cancelling writes `{root}/campaigns/{id}/cancel.json` (exclusive create). The running job
checks it between variants, stops dispatching, lets the variants in flight finish and
commits `cancelled` for every variant still pending. When no job is running, the canceller
commits those events itself.

A job also stops dispatching when the campaign's failure budget is spent (the spec's
`failure_budget`: N variants failed for good, or more than X% of those finished). The rest
stay pending for a resume once the cause is fixed; the run record (`runs/{epoch}.json` in
the manifest) says why it stopped, and the job exits non-zero, so Ray reports it FAILED.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import shlex
import threading
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec

from farm.campaign.manifest import Manifest, ManifestNotFound, Progress
from farm.campaign.manifest_io import exclusive_write
from farm.campaign.spec import FailureBudget
from farm.jobs.loop import RunReport, render_one
from farm.render.engine import Executor
from farm.storage import retry

__all__ = [
    "CampaignError",
    "CampaignJobStatus",
    "JobReport",
    "campaign_jobs",
    "campaign_logs",
    "campaign_status",
    "cancel_campaign",
    "cancel_requested",
    "list_campaigns",
    "mark_cancelled",
    "prepare_campaign",
    "render_concurrently",
    "resume_campaign",
    "submission_id",
    "submit_campaign",
    "wait_for",
]

REPO_ROOT = Path(__file__).resolve().parents[1]
TERMINAL_JOB = ("SUCCEEDED", "FAILED", "STOPPED")
# Failures a retry cannot fix: the same input fails the same way.
_NOT_RETRIED = ("invalid_input", "policy_violation")


class CampaignError(RuntimeError):
    """A campaign operation that cannot go ahead; the message says why."""


# ---- the job's render loop -----------------------------------------------------------------


@dataclass
class JobReport(RunReport):
    """What one campaign job did: RunReport counts plus cancellations, retries, stop reason.

    `failed` counts variants that failed for good (no attempt left, or a failure no retry
    fixes); `interrupted` those stopped while waiting to retry, which stay pending.
    """

    cancelled: int = 0
    retries: int = 0
    interrupted: int = 0
    stopped_by_cancel: bool = False
    stopped_by_budget: str | None = None  # why the failure budget stopped dispatch
    epoch: int = 0  # the writer epoch of the pass

    def summary(self) -> dict[str, Any]:
        """The run record: counts and why the pass stopped (None: it ran out of work)."""
        stopped = "failure_budget" if self.stopped_by_budget else None
        stopped = "cancelled" if self.stopped_by_cancel else stopped
        return {
            "completed": self.completed,
            "failed": self.failed,
            "interrupted": self.interrupted,
            "cancelled": self.cancelled,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "stopped": stopped,
            "reason": self.stopped_by_budget or ("campaign cancelled" if stopped else None),
            "ended_at": datetime.now(UTC).isoformat(),
        }


def _sleep(seconds: float, stop: Callable[[], bool], tick: float = 0.2) -> bool:
    """Sleep up to `seconds`, waking early (True) when `stop()` says so."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if stop():
            return True
        time.sleep(min(tick, max(0.0, deadline - time.monotonic())))
    return stop()


def render_concurrently(
    manifest: Manifest,
    executor: Executor,
    root: str,
    *,
    concurrency: int = 2,
    max_attempts: int = 3,
    backoff_s: float = 1.0,
    max_backoff_s: float = 60.0,
    cancelled: Callable[[], bool] = lambda: False,
    on_done: Callable[[dict, str, float], None] | None = None,
    storage_options: dict | None = None,
    worker: str = "campaign-job",
    failure_budget: FailureBudget | None = None,
    **engine: Any,
) -> JobReport:
    """Render the pending variants, at most `concurrency` at a time, through one executor.

    The threaded counterpart of `farm.runner.render_pending` (same events, same failure
    codes): one writer epoch for the pass, commits serialized by a lock. A failed variant
    is retried in its thread with exponential backoff (`backoff_s`, doubling, capped) until
    it has had `max_attempts` attempts, except for failures no retry can fix. `cancelled()`
    is asked before each dispatch and each retry; once true, nothing new starts, the
    variants in flight finish, and every variant still pending is committed `cancelled`.
    Once `failure_budget` (default FailureBudget()) is spent, nothing new starts either,
    and the rest stay pending. `on_done(row, status, seconds)` is called in this thread as
    each variant finishes. The pass's run record goes to the manifest (`Manifest.runs`).
    """
    if concurrency < 1:
        raise ValueError(f"concurrency must be >= 1, got {concurrency}")
    start = time.perf_counter()
    report = JobReport()
    budget = failure_budget or FailureBudget()
    writer = manifest.writer(worker=worker)
    report.epoch = writer.epoch
    lock = threading.Lock()
    halt = threading.Event()

    def commit(event: dict) -> None:
        with lock:
            writer.commit([event])

    def stopping() -> bool:
        if not halt.is_set() and cancelled():
            report.stopped_by_cancel = True
            halt.set()
        return halt.is_set()

    status = manifest.status()
    attempts = dict(
        zip(status["variant_id"].to_pylist(), status["attempt"].to_pylist(), strict=True)
    )

    def run(row: dict) -> tuple[str, float]:
        attempt = attempts.get(row["variant_id"], 0)
        while True:
            attempt += 1
            t0 = time.perf_counter()
            code = render_one(
                commit, executor, row, attempt, root, storage_options=storage_options, **engine
            )
            if code is None:
                return "completed", time.perf_counter() - t0
            if attempt >= max_attempts or code in _NOT_RETRIED:
                return "failed", time.perf_counter() - t0
            delay = min(max_backoff_s, backoff_s * 2 ** (attempt - 1))
            if _sleep(delay, stopping):
                return "interrupted", time.perf_counter() - t0
            with lock:
                report.retries += 1

    errors: list[BaseException] = []

    def collect(done: set[Future], rows: dict[Future, dict]) -> None:
        for future in done:
            try:
                outcome, seconds = future.result()
            except BaseException as error:  # StaleWriter, storage down: stop everything
                halt.set()
                errors.append(error)
                continue
            if outcome == "completed":
                report.completed += 1
            elif outcome == "failed":
                report.failed += 1
            else:
                report.interrupted += 1
            if on_done:
                on_done(rows[future], outcome, seconds)
        spent = budget.exceeded(report.failed, report.completed + report.failed)
        if spent and not report.stopped_by_budget and not halt.is_set():
            report.stopped_by_budget = spent
            halt.set()

    with ThreadPoolExecutor(concurrency, thread_name_prefix="variant") as pool:
        in_flight: dict[Future, dict] = {}
        for row in manifest.pending(max_attempts=max_attempts).to_pylist():
            while len(in_flight) >= concurrency:
                done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                collect(done, in_flight)
                for future in done:
                    del in_flight[future]
            if stopping():
                break
            in_flight[pool.submit(run, row)] = row
        collect(wait(in_flight).done, in_flight)
    if errors:
        raise errors[0]
    if report.stopped_by_cancel:
        report.cancelled = mark_cancelled(manifest, writer, max_attempts)
    report.seconds = time.perf_counter() - start
    manifest.record_run(writer.epoch, {"worker": worker, **report.summary()})
    return report


def mark_cancelled(manifest: Manifest, writer: Any, max_attempts: int = 3) -> int:
    """Commit `cancelled` for every variant still pending; returns how many."""
    todo = manifest.pending(max_attempts=max_attempts).select(["variant_id", "attempt"])
    events = [
        {
            "variant_id": r["variant_id"],
            "status": "cancelled",
            "attempt": r["attempt"],
            "error_code": "cancelled",
            "error_message": "campaign cancelled",
        }
        for r in todo.to_pylist()
    ]
    if events:
        writer.commit(events)
    return len(events)


# ---- storage side: manifests and the cancel marker -------------------------------------------


def _abs_root(root: str) -> str:
    """A local root as an absolute path (the job runs in another directory); URLs as given."""
    return root if "://" in root else os.path.abspath(root)


def _load_spec(spec: Any):
    from farm.campaign.spec import CampaignSpec, load_spec

    if isinstance(spec, CampaignSpec):
        return spec
    if isinstance(spec, dict):
        return load_spec(spec)
    path = Path(spec)
    if path.suffix.lower() in (".csv", ".parquet"):
        raise CampaignError(f"{path}: submit takes a campaign spec (.yaml/.json), not a feed")
    fmt = "json" if path.suffix.lower() == ".json" else "yaml"
    return load_spec(path.read_bytes(), fmt=fmt)


def prepare_campaign(spec: Any, root: str, storage_options: dict | None = None) -> Manifest:
    """Validate and expand a spec (path, dict or CampaignSpec); create its manifest (idempotent)."""
    from farm.campaign.expand import campaign_id, expand

    spec = _load_spec(spec)
    return Manifest.create(
        root, campaign_id(spec), spec.model_dump(mode="json"), expand(spec), storage_options
    )


def _cancel_path(root: str, cid: str) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(root)
    return fs, posixpath.join(path, "campaigns", cid, "cancel.json")


def cancel_requested(root: str, cid: str) -> bool:
    """Whether `farm campaign cancel` has been run for this campaign."""
    fs, path = _cancel_path(root, cid)
    fs.invalidate_cache(posixpath.dirname(path))
    return retry(lambda: fs.exists(path), f"stat {path}")


@dataclass(frozen=True)
class CampaignJobStatus:
    """A campaign's manifest progress, its cancel marker and (if asked) its latest job."""

    campaign_id: str
    name: str
    progress: Progress
    pending: int
    cancel_requested: bool
    job: str | None = None  # latest submission id
    job_status: str | None = None
    last_run: dict[str, Any] | None = None  # the latest run record: counts, why it stopped


def campaign_status(
    root: str, cid: str, address: Any = None, *, max_attempts: int = 3
) -> CampaignJobStatus:
    """Progress of a campaign from its manifest; with `address`, its latest job too."""
    manifest = Manifest.open(root, cid)
    job = status = None
    runs = manifest.runs()
    if address is not None:
        jobs = campaign_jobs(address, cid)
        if jobs:
            job, status = jobs[-1].submission_id, str(jobs[-1].status.value)
    return CampaignJobStatus(
        campaign_id=cid,
        name=manifest.spec.get("name", cid),
        progress=manifest.progress(max_attempts=max_attempts),
        pending=manifest.pending(max_attempts=max_attempts).num_rows,
        cancel_requested=cancel_requested(root, cid),
        job=job,
        job_status=status,
        last_run=runs[-1] if runs else None,
    )


def list_campaigns(root: str) -> list[dict[str, Any]]:
    """One row per campaign under `root`: id, name, total and counts by status."""
    fs, path = fsspec.core.url_to_fs(root)
    base = posixpath.join(path, "campaigns")
    try:
        names = sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(base, detail=False))
    except FileNotFoundError:
        return []
    rows = []
    for cid in names:
        try:
            manifest = Manifest.open(root, cid)
        except (ManifestNotFound, ValueError):
            continue  # half-created or not a campaign directory
        progress = manifest.progress()
        rows.append(
            {"campaign_id": cid, "name": manifest.spec.get("name", cid), "total": progress.total}
            | progress.by_status
        )
    return rows


# ---- cluster side: Ray Jobs ------------------------------------------------------------------


def _client(address: Any):
    from ray.job_submission import JobSubmissionClient

    if isinstance(address, JobSubmissionClient):
        return address
    return JobSubmissionClient(address)


def submission_id(cid: str, run: int = 1) -> str:
    """The Ray Job submission id of a campaign's `run`-th job (1, then resumes 2, 3, ...)."""
    return f"campaign-{cid}" if run <= 1 else f"campaign-{cid}-r{run}"


def _run_number(cid: str, sid: str | None) -> int | None:
    m = re.fullmatch(rf"campaign-{re.escape(cid)}(?:-r(\d+))?", sid or "")
    return None if m is None else int(m.group(1) or 1)


def campaign_jobs(address: Any, cid: str) -> list[Any]:
    """The campaign's Ray jobs (JobDetails), oldest run first."""
    jobs = [(_run_number(cid, j.submission_id), j) for j in _client(address).list_jobs()]
    return [j for n, j in sorted((p for p in jobs if p[0] is not None), key=lambda p: p[0])]


def _entrypoint(
    root: str,
    cid: str,
    *,
    concurrency: int,
    max_attempts: int,
    actors: int,
    preset: str | None,
    serve_app: str | None,
    python: str,
) -> str:
    args = [
        python,
        "-m",
        "jobs.render_campaign",
        "--root",
        root,
        "--campaign-id",
        cid,
        "--concurrency",
        str(concurrency),
        "--max-attempts",
        str(max_attempts),
        "--actors",
        str(actors),
    ]
    if preset:
        args += ["--preset", preset]
    if serve_app:
        args += ["--serve-app", serve_app]
    return shlex.join(args)


def _submit(
    address: Any,
    manifest: Manifest,
    root: str,
    *,
    concurrency: int = 2,
    max_attempts: int = 3,
    actors: int = 2,
    preset: str | None = None,
    serve_app: str | None = None,
    python: str = "python",
    runtime_env: dict | None = None,
    agent_wait_s: float = 60.0,
) -> str:
    """Submit the campaign's next job, or return the one already running (see module doc)."""
    client = _client(address)
    cid = manifest.campaign_id
    jobs = campaign_jobs(client, cid)
    run = 1
    if jobs:
        latest = jobs[-1]
        if str(latest.status.value) not in TERMINAL_JOB:
            return latest.submission_id  # already queued or running: the same job
        if not manifest.pending(max_attempts=max_attempts).num_rows:
            return latest.submission_id  # nothing left to render
        run = _run_number(cid, latest.submission_id) + 1
    sid = submission_id(cid, run)
    # The job runs the repo's code from the cluster's Python environment. On a local head
    # (and in the tests) that is this checkout, so PYTHONPATH is enough. A remote cluster
    # would ship the code instead: runtime_env={"working_dir": ".", "excludes": [".venv",
    # "farm-data"], "env_vars": {...}} (uploaded by the client), or bake it into the image.
    env = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}} if runtime_env is None else runtime_env
    entrypoint = _entrypoint(
        root,
        cid,
        concurrency=concurrency,
        max_attempts=max_attempts,
        actors=actors,
        preset=preset,
        serve_app=serve_app,
        python=python,
    )
    deadline = time.monotonic() + agent_wait_s
    while True:
        try:
            client.submit_job(
                entrypoint=entrypoint,
                submission_id=sid,
                runtime_env=env,
                metadata={"campaign_id": cid, "root": root, "farm": "campaign"},
            )
            return sid
        except RuntimeError as error:
            if "already exists" in str(error):
                return sid  # a concurrent submit of this campaign won the race: same job
            # A head that has just started has no job agent for a few seconds.
            if "No available agent" not in str(error) or time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def submit_campaign(
    spec: Any, *, address: Any, root: str, storage_options: dict | None = None, **job: Any
) -> tuple[str, str]:
    """Validate + expand `spec`, create its manifest, submit (or find) its job.

    Returns (campaign_id, submission_id). `job` options: concurrency, max_attempts, actors,
    preset, serve_app, python (the cluster's interpreter command), runtime_env.
    """
    root = _abs_root(root)
    spec = _load_spec(spec)  # a bad spec or an unreachable cluster writes nothing
    client = _client(address)
    manifest = prepare_campaign(spec, root, storage_options)
    if cancel_requested(root, manifest.campaign_id):
        raise CampaignError(f"campaign {manifest.campaign_id} was cancelled")
    return manifest.campaign_id, _submit(client, manifest, root, **job)


def resume_campaign(cid: str, *, address: Any, root: str, **job: Any) -> str:
    """Start the campaign's next job for its pending variants (or return the running one)."""
    root = _abs_root(root)
    manifest = Manifest.open(root, cid)
    if cancel_requested(root, cid):
        raise CampaignError(f"campaign {cid} was cancelled; it cannot be resumed")
    return _submit(address, manifest, root, **job)


def cancel_campaign(root: str, cid: str, address: Any = None, *, max_attempts: int = 3) -> str:
    """Cancel a campaign; returns what happens next, in words.

    Writes the cancel marker (exclusive create, so a second cancel is a no-op). A running
    job notices it between variants and commits `cancelled` for the rest; with no job
    running (none on `address`), the pending variants are committed `cancelled` here.
    """
    root = _abs_root(root)
    manifest = Manifest.open(root, cid)
    fs, path = _cancel_path(root, cid)
    marker = {"cancelled_at": datetime.now(UTC).isoformat()}
    with contextlib.suppress(FileExistsError):  # cancelled before: the first marker stays
        exclusive_write(fs, path, json.dumps(marker).encode())
    if address is not None:
        jobs = campaign_jobs(address, cid)
        if jobs and str(jobs[-1].status.value) not in TERMINAL_JOB:
            return f"job {jobs[-1].submission_id} will stop and mark the rest cancelled"
    n = mark_cancelled(manifest, manifest.writer(worker="cancel"), max_attempts)
    return f"{n} pending variants marked cancelled"


def campaign_logs(address: Any, cid: str) -> str:
    """The logs of every job of the campaign, oldest first, each under a header line."""
    client = _client(address)
    jobs = campaign_jobs(client, cid)
    if not jobs:
        raise CampaignError(f"no jobs of campaign {cid} on this cluster")
    return "".join(
        f"=== {j.submission_id} ({j.status.value}) ===\n{client.get_job_logs(j.submission_id)}"
        for j in jobs
    )


def wait_for(address: Any, submission_id: str, timeout: float = 600.0, poll_s: float = 0.5) -> str:
    """Block until the job ends; returns its final status (SUCCEEDED, FAILED, STOPPED)."""
    client = _client(address)
    deadline = time.monotonic() + timeout
    while True:
        status = str(client.get_job_status(submission_id).value)
        if status in TERMINAL_JOB:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {submission_id} still {status} after {timeout:.0f} s")
        time.sleep(poll_s)
