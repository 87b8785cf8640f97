"""Campaigns as Ray Jobs, the client side: submit, resume, cancel, watch.

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

The job's own loop is `farm.jobs.loop`; its options (concurrency, retries) `JobOptions`.
"""

from __future__ import annotations

import contextlib
import json
import os
import posixpath
import re
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import fsspec

from farm.campaign.manifest import Manifest, ManifestNotFound, Progress
from farm.campaign.manifest_io import exclusive_write
from farm.jobs.cluster import auth_headers, job_entrypoint
from farm.jobs.inputs import Campaign
from farm.jobs.loop import mark_cancelled
from farm.jobs.options import JobOptions
from farm.storage import retry

__all__ = [
    "CampaignError",
    "CampaignJobStatus",
    "campaign_jobs",
    "campaign_logs",
    "campaign_status",
    "cancel_campaign",
    "cancel_requested",
    "list_campaigns",
    "prepare_campaign",
    "resume_campaign",
    "submission_id",
    "submit_campaign",
    "wait_for",
]

REPO_ROOT = Path(__file__).resolve().parents[2]  # farm/jobs/client.py → the checkout
TERMINAL_JOB = ("SUCCEEDED", "FAILED", "STOPPED")


class CampaignError(RuntimeError):
    """A campaign operation that cannot go ahead; the message says why."""


# ---- storage side: manifests and the cancel marker -------------------------------------------


def _abs_root(root: str) -> str:
    """A local root as an absolute path (the job runs in another directory); URLs as given."""
    return root if "://" in root else os.path.abspath(root)


def prepare_campaign(
    campaign: Campaign, root: str, storage_options: dict | None = None
) -> Manifest:
    """Create the campaign's manifest from its variants (idempotent: same variants, same one)."""
    return Manifest.create(
        root, campaign.campaign_id, campaign.record(), campaign.variants, storage_options
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
    root: str, cid: str, address: Any = None, *, max_attempts: int | None = None
) -> CampaignJobStatus:
    """Progress of a campaign from its manifest; with `address`, its latest job too."""
    max_attempts = max_attempts or JobOptions().max_attempts
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
    # Send Ray's token when the cluster runs with token auth, whatever RAY_AUTH_MODE this
    # process has (farm.jobs.cluster): `farm serve`'s Ray does, a fresh shell has it unset.
    return JobSubmissionClient(address, headers=auth_headers(address))


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


def _submit(
    address: Any,
    manifest: Manifest,
    root: str,
    options: JobOptions | None = None,
    *,
    python: str | None = None,
    runtime_env: dict | None = None,
    agent_wait_s: float = 60.0,
) -> str:
    """Submit the campaign's next job, or return the one already running (see module doc)."""
    options = options or JobOptions()
    client = _client(address)
    cid = manifest.campaign_id
    jobs = campaign_jobs(client, cid)
    run = 1
    if jobs:
        latest = jobs[-1]
        if str(latest.status.value) not in TERMINAL_JOB:
            return latest.submission_id  # already queued or running: the same job
        if not manifest.pending(max_attempts=options.max_attempts).num_rows:
            return latest.submission_id  # nothing left to render
        run = _run_number(cid, latest.submission_id) + 1
    sid = submission_id(cid, run)
    # The job runs the repo's code from the cluster's Python environment. On a local head
    # (and in the tests) that is this checkout, so PYTHONPATH is enough. A remote cluster
    # would ship the code instead: runtime_env={"working_dir": ".", "excludes": [".venv",
    # "farm-data"], "env_vars": {...}} (uploaded by the client), or bake it into the image.
    env = {"env_vars": {"PYTHONPATH": str(REPO_ROOT)}} if runtime_env is None else runtime_env
    entrypoint = job_entrypoint(root, cid, options, python)
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
    campaign: Campaign,
    *,
    address: Any,
    root: str,
    options: JobOptions | None = None,
    storage_options: dict | None = None,
    **launch: Any,
) -> tuple[str, str]:
    """Create the campaign's manifest and submit (or find) its job.

    `campaign` was parsed and expanded where it came in (`farm.jobs.inputs`); it is not
    loaded again here. Returns (campaign_id, submission_id). `launch`: python (the
    cluster's interpreter command; default `farm.jobs.cluster.job_python`), runtime_env,
    agent_wait_s.
    """
    root = _abs_root(root)
    client = _client(address)  # an unreachable cluster writes nothing
    manifest = prepare_campaign(campaign, root, storage_options)
    if cancel_requested(root, manifest.campaign_id):
        raise CampaignError(f"campaign {manifest.campaign_id} was cancelled")
    return manifest.campaign_id, _submit(client, manifest, root, options, **launch)


def resume_campaign(
    cid: str, *, address: Any, root: str, options: JobOptions | None = None, **launch: Any
) -> str:
    """Start the campaign's next job for its pending variants (or return the running one)."""
    root = _abs_root(root)
    manifest = Manifest.open(root, cid)
    if cancel_requested(root, cid):
        raise CampaignError(f"campaign {cid} was cancelled; it cannot be resumed")
    return _submit(address, manifest, root, options, **launch)


def cancel_campaign(
    root: str, cid: str, address: Any = None, *, max_attempts: int | None = None
) -> str:
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
