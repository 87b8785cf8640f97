"""What is true of a campaign now, read-only: its manifest, its cancel marker, its jobs.

A campaign's state (`CampaignJobStatus.state`) joins the manifest with its latest job as
the Jobs API reports it: a job that died (driver killed, node lost, failure budget) with
variants left makes the campaign `stalled` and `resumable`, never "running".

Job ids name the storage root (`root_tag`, a short hash of its absolute form):
`campaign-{tag}-{id}` for the first run, `-r2`, `-r3`, ... for each resume, and every
lookup matches that tag and the root in the job's metadata, so a tenant (a root) never
sees another's jobs. Acting on a campaign (submit, resume, cancel) is `farm.jobs.client`'s.
"""

from __future__ import annotations

import hashlib
import os
import posixpath
import re
from dataclasses import dataclass
from typing import Any

import fsspec

from farm.campaign.manifest import Manifest, ManifestNotFound, Progress
from farm.jobs.cluster import auth_headers
from farm.jobs.options import JobOptions
from farm.storage import retry

__all__ = [
    "TERMINAL_JOB",
    "CampaignJobStatus",
    "JobState",
    "RootJobs",
    "abs_root",
    "campaign_jobs",
    "campaign_status",
    "cancel_path",
    "cancel_requested",
    "jobs_client",
    "jobs_of_root",
    "list_campaigns",
    "root_jobs",
    "root_tag",
    "submission_id",
]

TERMINAL_JOB = ("SUCCEEDED", "FAILED", "STOPPED")


def abs_root(root: str) -> str:
    """A local root as an absolute path (the job runs in another directory); URLs as given."""
    return root if "://" in root else os.path.abspath(root)


def cancel_path(root: str, cid: str) -> tuple[Any, str]:
    fs, path = fsspec.core.url_to_fs(root)
    return fs, posixpath.join(path, "campaigns", cid, "cancel.json")


def cancel_requested(root: str, cid: str) -> bool:
    """Whether `farm campaign cancel` has been run for this campaign."""
    fs, path = cancel_path(root, cid)
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
    root = abs_root(root)
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


def jobs_client(address: Any):
    from ray.job_submission import JobSubmissionClient

    if isinstance(address, JobSubmissionClient):
        return address
    # Send Ray's token when the cluster runs with token auth, whatever RAY_AUTH_MODE this
    # process has (farm.jobs.cluster): `farm serve`'s Ray does, a fresh shell has it unset.
    return JobSubmissionClient(address, headers=auth_headers(address))


def root_tag(root: str) -> str:
    """A short hash of the storage root (absolute), naming its jobs apart from other roots'."""
    return hashlib.sha256(abs_root(root).encode()).hexdigest()[:10]


def submission_id(cid: str, run: int = 1, *, root: str) -> str:
    """The Ray Job submission id of a campaign's `run`-th job (1, then resumes 2, 3, ...)."""
    sid = f"campaign-{root_tag(root)}-{cid}"
    return sid if run <= 1 else f"{sid}-r{run}"


_SUBMISSION = re.compile(r"campaign-([0-9a-f]{10})-([0-9a-f]+)(?:-r(\d+))?")


def jobs_of_root(address: Any, root: str) -> dict[str, list[tuple[int, Any]]]:
    """{campaign id: [(run, JobDetails)]} of the root's campaign jobs on the cluster."""
    root = abs_root(root)
    tag, out = root_tag(root), {}
    for job in jobs_client(address).list_jobs():
        m = _SUBMISSION.fullmatch(job.submission_id or "")
        # The tag narrows; the metadata decides (a 10-hex tag could collide, a root cannot).
        if m is None or m.group(1) != tag or (job.metadata or {}).get("root") != root:
            continue
        out.setdefault(m.group(2), []).append((int(m.group(3) or 1), job))
    return {cid: sorted(runs, key=lambda r: r[0]) for cid, runs in out.items()}


def campaign_jobs(address: Any, cid: str, *, root: str) -> list[Any]:
    """The campaign's Ray jobs under `root` (JobDetails), oldest run first."""
    return [job for _, job in jobs_of_root(address, root).get(cid, [])]


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
        jobs = jobs_of_root(address, root)
    except Exception as error:  # refused, auth, version skew: a status says it, never a 500
        return RootJobs({}, f"Ray Jobs API: {error}")
    return RootJobs({cid: JobState.of(runs[-1][1]) for cid, runs in jobs.items()})
