"""Per-tenant quotas at the Api, and bounded waits on the Director: the farm never hangs.

A tenant's `Quota` (`farm.settings`, per tenant over ``"*"`` over the defaults) caps:

1. ``max_concurrent_videos``: its videos queued or rendering. The Director counts them and
   refuses in the same step that would add one (`Director.create`), so a burst of
   concurrent POSTs cannot slip past the count.
2. ``max_concurrent_campaigns``: its campaigns that are running, i.e. have work left, no
   cancel marker and a live (non-terminal) Ray job. Resubmitting a campaign it already
   has starts nothing and is never refused.
3. ``max_queued_variants``: variants waiting across those campaigns plus the new one's.
4. ``gpu_seconds_per_day``: what it spent since UTC midnight, read from what the farm
   already records: the ``gpu_seconds`` of its campaigns' manifest events (every attempt)
   plus the render time of its videos that finished today (the Director's memory, so a
   Director restart forgets that part). Read only when the limit is set.

Over a limit: 429 ``quota_exceeded``, ``param`` the limit's name, the message naming the
tenant, the value and the limit, and ``Retry-After``: a few seconds for a concurrency
limit, the seconds until UTC midnight for the daily budget.

Every Director call the Api makes has a deadline (`bounded`): past it the answer is a 503
``busy`` with Retry-After, never a request left hanging.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import fsspec
import pyarrow.compute as pc

from farm.campaign.manifest import Manifest, ManifestNotFound
from farm.serve.wire import RequestError
from farm.settings import Quota

CONCURRENCY_RETRY_S = 5  # a running video or campaign frees its slot in about this long
DIRECTOR_TIMEOUT_S = 5.0  # a create or cancel is bookkeeping: longer means the Director is stuck
BUSY_RETRY_S = 2


def over_quota(limit: str, tenant: str, value: Any, bound: Any, retry_after: int) -> RequestError:
    """The 429 for a tenant at or over one of its quotas; ``param`` is the limit's name."""
    message = f"tenant {tenant!r} is at its quota {limit}={bound} (now {value})"
    return RequestError(
        429, "quota_exceeded", message, limit, headers={"Retry-After": str(retry_after)}
    )


def day_start(now: datetime | None = None) -> datetime:
    """The start of the current UTC day, when daily budgets start again."""
    now = now or datetime.now(UTC)
    return now.replace(hour=0, minute=0, second=0, microsecond=0)


def seconds_to_midnight(now: datetime | None = None) -> int:
    """Whole seconds until the next UTC midnight (at least 1): a daily budget's Retry-After."""
    now = now or datetime.now(UTC)
    left = (day_start(now) + timedelta(days=1) - now).total_seconds()
    return max(1, math.ceil(left))


def check_videos(quota: Quota, tenant: str, unfinished: int) -> None:
    """Refuse a new video when the tenant already has max_concurrent_videos unfinished."""
    bound = quota.max_concurrent_videos
    if bound is not None and unfinished >= bound:
        raise over_quota("max_concurrent_videos", tenant, unfinished, bound, CONCURRENCY_RETRY_S)


def check_gpu_budget(quota: Quota, tenant: str, used_s: float) -> None:
    """Refuse new work once the tenant spent its gpu_seconds_per_day today."""
    bound = quota.gpu_seconds_per_day
    if bound is not None and used_s >= bound:
        value = f"{used_s:.1f} s used today"
        raise over_quota("gpu_seconds_per_day", tenant, value, bound, seconds_to_midnight())


@dataclass
class CampaignUsage:
    """A tenant's campaigns as the quotas see them."""

    running: list[str] = field(default_factory=list)  # ids of its running campaigns
    queued: int = 0  # variants waiting in those
    gpu_seconds_today: float = 0.0  # spent since UTC midnight, every campaign, every attempt


def campaign_ids(root: str) -> list[str]:
    """The ids of the campaigns under `root` (a tenant's root)."""
    fs, path = fsspec.core.url_to_fs(root)
    with contextlib.suppress(FileNotFoundError):
        return sorted(posixpath.basename(p.rstrip("/")) for p in fs.ls(f"{path}/campaigns"))
    return []


def campaign_usage(
    root: str,
    job_running: Callable[[str], bool] | None,
    *,
    cancelled: Callable[[str], bool] = lambda cid: False,
    gpu_seconds: bool = False,
    now: datetime | None = None,
) -> CampaignUsage:
    """What the campaigns under `root` hold: running ones, queued variants, GPU-s today.

    `job_running(cid)` says whether a campaign's job is alive; it is asked only about
    campaigns with work left and no cancel marker (`cancelled`), so a tenant with nothing
    running costs no Jobs API call. None skips the running count.
    """
    usage = CampaignUsage()
    since = day_start(now)
    for cid in campaign_ids(root):
        try:
            manifest = Manifest.open(root, cid)
        except (ManifestNotFound, ValueError):
            continue  # half-created, or not a campaign directory
        if gpu_seconds:
            events = manifest.events()
            today = events.filter(pc.greater_equal(events["ts"], since))
            usage.gpu_seconds_today += pc.sum(today["gpu_seconds"]).as_py() or 0.0
        if job_running is None:
            continue
        pending = manifest.pending().num_rows
        if pending and not cancelled(cid) and job_running(cid):
            usage.running.append(cid)
            usage.queued += pending
    return usage


def check_campaign(
    quota: Quota, tenant: str, usage: CampaignUsage, campaign_id: str, variants: int
) -> None:
    """Refuse a new campaign over max_concurrent_campaigns or max_queued_variants."""
    if campaign_id in usage.running:
        return  # resubmitting a running campaign finds its job; it adds nothing
    bound = quota.max_concurrent_campaigns
    if bound is not None and len(usage.running) >= bound:
        value = f"{len(usage.running)} running"
        raise over_quota("max_concurrent_campaigns", tenant, value, bound, CONCURRENCY_RETRY_S)
    bound = quota.max_queued_variants
    if bound is not None and usage.queued + variants > bound:
        value = f"{usage.queued:,} queued + {variants:,} new"
        raise over_quota("max_queued_variants", tenant, value, bound, CONCURRENCY_RETRY_S)


async def bounded(response: Any, timeout_s: float, what: str) -> Any:
    """Await a DeploymentResponse for at most `timeout_s`; past it, cancel it and 503."""
    try:
        return await asyncio.wait_for(_awaited(response), timeout_s)
    except TimeoutError:
        with contextlib.suppress(Exception):
            response.cancel()
        message = f"the farm is busy: {what} took over {timeout_s:g} s; retry shortly"
        raise RequestError(
            503, "busy", message, headers={"Retry-After": str(BUSY_RETRY_S)}
        ) from None


async def _awaited(response: Any) -> Any:
    return await response
