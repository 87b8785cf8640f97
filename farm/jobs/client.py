"""Campaigns as Ray Jobs, the client side: submit, resume, cancel, watch.

One campaign job at a time per campaign and storage root. The campaign id is a content
hash of the spec, so two tenants (two roots: `farm.serve.campaigns.tenant_root`) posting
the same spec share it; the submission id therefore also names the root, by a short hash
of its absolute form (`root_tag`): `campaign-{tag}-{id}` for the first run,
`campaign-{tag}-{id}-r2`, `-r3`, ... for each resume. Every job lookup (submit, resume,
cancel, status, logs) matches that tag and the root in the job's metadata, so a tenant
never sees, joins or stops another's job. Submitting while a job of the campaign is
PENDING or RUNNING returns that job instead of starting a second one (Ray refuses a
duplicate submission id, which also settles two submits racing each other). Once the
latest job has ended, a submit or resume with variants still pending starts the next
`-rN`; the manifest decides what is pending, so a resumed job never re-renders a finished
variant.

Cancelling writes `{root}/campaigns/{id}/cancel.json` (exclusive create; under the root,
so per tenant). The running job
checks it between variants, stops dispatching, lets the variants in flight finish and
commits `cancelled` for every variant still pending. When no job is running, the canceller
commits those events itself.

A job also stops dispatching when the campaign's failure budget is spent (the spec's
`failure_budget`: N variants failed for good, or more than X% of those finished). The rest
stay pending for a resume once the cause is fixed; the run record (`runs/{epoch}.json` in
the manifest) says why it stopped, and the job exits non-zero, so Ray reports it FAILED.

A campaign's state (`CampaignJobStatus.state`) joins the manifest with its latest job as
the Jobs API reports it: a job that died (driver killed, node lost, failure budget) with
variants left makes the campaign `stalled` and `resumable`, never "running".

The job's own loop is `farm.jobs.loop`; its options (concurrency, retries) `JobOptions`.
"""

from __future__ import annotations

import contextlib
import hashlib
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
    "JobState",
    "RootJobs",
    "campaign_jobs",
    "campaign_logs",
    "campaign_status",
    "cancel_campaign",
    "cancel_requested",
    "list_campaigns",
    "prepare_campaign",
    "resume_campaign",
    "root_jobs",
    "root_tag",
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
class JobState:
    """A campaign's latest Ray job as the Jobs API reports it.

    `status`: PENDING, RUNNING, SUCCEEDED, FAILED or STOPPED (Ray's words); NONE when the
    campaign has no job on the cluster; UNKNOWN when the Jobs API could not be asked.
    """

    status: str
    id: str | None = None  # submission id
    message: str = ""  # Ray's message (why it failed), or why the API could not be asked

    @property
    def live(self) -> bool:
        """Whether the job is queued or running (it will still commit events)."""
        return self.status in ("PENDING", "RUNNING")

    @classmethod
    def of(cls, details: Any) -> JobState:
        """From Ray's JobDetails."""
        return cls(str(details.status.value), details.submission_id, details.message or "")


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
    job_message: str = ""  # Ray's message about the latest job (why it failed)

    @property
    def state(self) -> str:
        """The campaign as a person would say it, manifest and job together.

        finished (nothing left), cancelled, queued / running / cancelling (a live job),
        stalled (work left and no live job: it died, was stopped, or never started), or
        unknown (work left and the Jobs API was not asked or not reachable).
        """
        if not self.pending:
            return "cancelled" if self.cancel_requested else "finished"
        if self.job_status in ("PENDING", "RUNNING"):
            if self.cancel_requested:
                return "cancelling"
            return "queued" if self.job_status == "PENDING" else "running"
        if self.job_status in (None, "UNKNOWN"):
            return "unknown"
        return "stalled"

    @property
    def resumable(self) -> bool:
        """Whether `resume_campaign` would start a job for variants left undone."""
        return self.state == "stalled" and not self.cancel_requested


def campaign_status(
    root: str,
    cid: str,
    address: Any = None,
    *,
    max_attempts: int | None = None,
    manifest: Manifest | None = None,
    job: JobState | None = None,
) -> CampaignJobStatus:
    """Progress of a campaign from its manifest; with `address` (or `job`), its latest job.

    The Jobs API failing does not fail the status: the job is then UNKNOWN, with why.
    """
    max_attempts = max_attempts or JobOptions().max_attempts
    root = _abs_root(root)
    manifest = manifest or Manifest.open(root, cid)
    runs = manifest.runs()
    if job is None and address is not None:
        job = root_jobs(address, root).of(cid)
    return CampaignJobStatus(
        campaign_id=cid,
        name=manifest.spec.get("name", cid),
        progress=manifest.progress(max_attempts=max_attempts),
        pending=manifest.pending(max_attempts=max_attempts).num_rows,
        cancel_requested=cancel_requested(root, cid),
        job=job.id if job else None,
        job_status=job.status if job else None,  # None: not asked
        last_run=runs[-1] if runs else None,
        job_message=job.message if job else "",
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


def root_tag(root: str) -> str:
    """A short hash of the storage root (absolute), naming its jobs apart from other roots'."""
    return hashlib.sha256(_abs_root(root).encode()).hexdigest()[:10]


def submission_id(cid: str, run: int = 1, *, root: str) -> str:
    """The Ray Job submission id of a campaign's `run`-th job (1, then resumes 2, 3, ...)."""
    sid = f"campaign-{root_tag(root)}-{cid}"
    return sid if run <= 1 else f"{sid}-r{run}"


_SUBMISSION = re.compile(r"campaign-([0-9a-f]{10})-([0-9a-f]+)(?:-r(\d+))?")


def _jobs_of_root(address: Any, root: str) -> dict[str, list[tuple[int, Any]]]:
    """{campaign id: [(run, JobDetails)]} of the root's campaign jobs on the cluster."""
    root = _abs_root(root)
    tag, out = root_tag(root), {}
    for job in _client(address).list_jobs():
        m = _SUBMISSION.fullmatch(job.submission_id or "")
        # The tag narrows; the metadata decides (a 10-hex tag could collide, a root cannot).
        if m is None or m.group(1) != tag or (job.metadata or {}).get("root") != root:
            continue
        out.setdefault(m.group(2), []).append((int(m.group(3) or 1), job))
    return {cid: sorted(runs, key=lambda r: r[0]) for cid, runs in out.items()}


def campaign_jobs(address: Any, cid: str, *, root: str) -> list[Any]:
    """The campaign's Ray jobs under `root` (JobDetails), oldest run first."""
    return [job for _, job in _jobs_of_root(address, root).get(cid, [])]


@dataclass(frozen=True)
class RootJobs:
    """The latest job of each campaign under one root, from one Jobs API call."""

    latest: dict[str, JobState]
    error: str = ""  # why the Jobs API could not be asked: every campaign is then UNKNOWN

    def of(self, cid: str) -> JobState:
        """The campaign's latest job: NONE when it has none, UNKNOWN when nobody could say."""
        if self.error:
            return JobState("UNKNOWN", message=self.error)
        return self.latest.get(cid, JobState("NONE"))


def root_jobs(address: Any, root: str) -> RootJobs:
    """The root's campaigns' latest jobs; never raises for the Jobs API (see `RootJobs`)."""
    try:
        jobs = _jobs_of_root(address, root)
    except Exception as error:  # refused, auth, version skew: a status says it, never a 500
        return RootJobs({}, f"Ray Jobs API: {error}")
    return RootJobs({cid: JobState.of(runs[-1][1]) for cid, runs in jobs.items()})


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
    runs = _jobs_of_root(client, root).get(cid, [])
    run = 1
    if runs:
        latest = runs[-1][1]
        if str(latest.status.value) not in TERMINAL_JOB:
            return latest.submission_id  # already queued or running: the same job
        if not manifest.pending(max_attempts=options.max_attempts).num_rows:
            return latest.submission_id  # nothing left to render
        run = runs[-1][0] + 1
    sid = submission_id(cid, run, root=root)
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
        jobs = campaign_jobs(address, cid, root=root)
        if jobs and str(jobs[-1].status.value) not in TERMINAL_JOB:
            return f"job {jobs[-1].submission_id} will stop and mark the rest cancelled"
    n = mark_cancelled(manifest, manifest.writer(worker="cancel"), max_attempts)
    return f"{n} pending variants marked cancelled"


def campaign_logs(address: Any, cid: str, *, root: str) -> str:
    """The logs of every job of the campaign under `root`, oldest first, each under a header."""
    client = _client(address)
    jobs = campaign_jobs(client, cid, root=root)
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
