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

Reading a campaign's state (manifest, cancel marker, jobs) is `farm.jobs.state`'s; the
job's own loop is `farm.jobs.loop`; its options (concurrency, retries) `JobOptions`.
"""

from __future__ import annotations

import contextlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from farm.campaign.manifest import Manifest
from farm.campaign.manifest_io import exclusive_write
from farm.jobs.cluster import job_entrypoint
from farm.jobs.inputs import Campaign
from farm.jobs.loop import mark_cancelled
from farm.jobs.options import JobOptions
from farm.jobs.state import (
    TERMINAL_JOB,
    abs_root,
    campaign_jobs,
    cancel_path,
    cancel_requested,
    jobs_client,
    jobs_of_root,
    submission_id,
)

__all__ = [
    "CampaignError",
    "campaign_logs",
    "cancel_campaign",
    "prepare_campaign",
    "resume_campaign",
    "submit_campaign",
    "wait_for",
]

REPO_ROOT = Path(__file__).resolve().parents[2]  # farm/jobs/client.py → the checkout


class CampaignError(RuntimeError):
    """A campaign operation that cannot go ahead; the message says why."""


def prepare_campaign(
    campaign: Campaign, root: str, storage_options: dict | None = None
) -> Manifest:
    """Create the campaign's manifest from its variants (idempotent: same variants, same one)."""
    return Manifest.create(
        root, campaign.campaign_id, campaign.record(), campaign.variants, storage_options
    )


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
    client = jobs_client(address)
    cid = manifest.campaign_id
    runs = jobs_of_root(client, root).get(cid, [])
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
    root = abs_root(root)
    client = jobs_client(address)  # an unreachable cluster writes nothing
    manifest = prepare_campaign(campaign, root, storage_options)
    if cancel_requested(root, manifest.campaign_id):
        raise CampaignError(f"campaign {manifest.campaign_id} was cancelled")
    return manifest.campaign_id, _submit(client, manifest, root, options, **launch)


def resume_campaign(
    cid: str, *, address: Any, root: str, options: JobOptions | None = None, **launch: Any
) -> str:
    """Start the campaign's next job for its pending variants (or return the running one)."""
    root = abs_root(root)
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
    root = abs_root(root)
    manifest = Manifest.open(root, cid)
    fs, path = cancel_path(root, cid)
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
    client = jobs_client(address)
    jobs = campaign_jobs(client, cid, root=root)
    if not jobs:
        raise CampaignError(f"no jobs of campaign {cid} on this cluster")
    return "".join(
        f"=== {j.submission_id} ({j.status.value}) ===\n{client.get_job_logs(j.submission_id)}"
        for j in jobs
    )


def wait_for(address: Any, submission_id: str, timeout: float = 600.0, poll_s: float = 0.5) -> str:
    """Block until the job ends; returns its final status (SUCCEEDED, FAILED, STOPPED)."""
    client = jobs_client(address)
    deadline = time.monotonic() + timeout
    while True:
        status = str(client.get_job_status(submission_id).value)
        if status in TERMINAL_JOB:
            return status
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {submission_id} still {status} after {timeout:.0f} s")
        time.sleep(poll_s)
