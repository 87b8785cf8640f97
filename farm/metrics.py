"""The farm's Prometheus metrics, recorded with `ray.util.metrics` where the work happens.

Ray exports every process's metrics through its own per-node metrics endpoint (the
node's `MetricsExportPort`; Prometheus finds every node through Ray's service-discovery
file `/tmp/ray/prom_metrics_service_discovery.json`), so the farm runs no exporter of its
own. On export Ray prefixes each name with `ray_`, counters get `_total` and histograms
`_bucket`, `_sum` and `_count`; the names below are the exported ones, as PromQL sees them:

    ray_farm_variants_total{campaign, status}        counter: render attempts that ended
                                                     `completed` or `failed`
    ray_farm_campaign_variants{campaign, status}     gauge: the manifest's variant counts by
                                                     status, set by the campaign job
    ray_farm_render_seconds{preset, size}            histogram: wall seconds to render one
                                                     video or variant, end to end
    ray_farm_window_steps_total{preset}              counter: window-steps (one window, one
                                                     denoising step) run by the Renderer
    ray_farm_renderer_batch_size{preset}             histogram: videos' requests merged into
                                                     one Renderer `@serve.batch` call
    ray_farm_dispatch_queue_depth{campaign}          gauge: accepted, not yet finished: a
                                                     job's variants, the Director's videos
    ray_farm_gpu_seconds_total{campaign}             counter: accelerator seconds spent
                                                     rendering (every attempt, failed too)
    ray_farm_frames_rendered_total{campaign, preset} counter: frames of finished videos
    ray_farm_failures_total{campaign, reason}        counter: failed attempts by reason
                                                     (farm.campaign.tables.FAILURE_CODES,
                                                     render_failed)

`campaign` is the campaign id, or `adhoc` for videos made through `/v1/videos`; `size`
is `WxH`. Recording never raises: a metric that cannot be recorded is logged and dropped,
so monitoring can never fail a render. Without Ray initialised the calls do nothing.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Iterable, Mapping
from typing import Any

from ray.util import metrics

__all__ = [
    "ADHOC",
    "CampaignProgressReporter",
    "record_attempt",
    "record_batch",
    "record_campaign_counts",
    "record_queue_depth",
    "record_render",
    "record_unfinished",
    "record_video",
]

log = logging.getLogger(__name__)

ADHOC = "adhoc"  # the `campaign` tag of videos made through /v1/videos
RENDER_SECONDS_BOUNDARIES = [0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 3600]
BATCH_BOUNDARIES = [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64]


class _Metrics:
    """The metric objects of this process (Ray registers each name once per process)."""

    def __init__(self) -> None:
        self.variants = metrics.Counter(
            "farm_variants",
            description="Render attempts that ended, by campaign and status (completed/failed).",
            tag_keys=("campaign", "status"),
        )
        self.campaign_variants = metrics.Gauge(
            "farm_campaign_variants",
            description="Variants of a campaign by status, from its manifest.",
            tag_keys=("campaign", "status"),
        )
        self.render_seconds = metrics.Histogram(
            "farm_render_seconds",
            description="Wall seconds to render one video or variant, by preset and size.",
            boundaries=RENDER_SECONDS_BOUNDARIES,
            tag_keys=("preset", "size"),
        )
        self.window_steps = metrics.Counter(
            "farm_window_steps",
            description="Window-steps run by the Renderer pool.",
            tag_keys=("preset",),
        )
        self.batch_size = metrics.Histogram(
            "farm_renderer_batch_size",
            description="Videos' requests merged into one Renderer batch.",
            boundaries=BATCH_BOUNDARIES,
            tag_keys=("preset",),
        )
        self.queue_depth = metrics.Gauge(
            "farm_dispatch_queue_depth",
            description="Variants or videos accepted and not yet finished.",
            tag_keys=("campaign",),
        )
        self.gpu_seconds = metrics.Counter(
            "farm_gpu_seconds",
            description="Accelerator seconds spent rendering, by campaign.",
            tag_keys=("campaign",),
        )
        self.frames = metrics.Counter(
            "farm_frames_rendered",
            description="Frames of finished videos and variants.",
            tag_keys=("campaign", "preset"),
        )
        self.failures = metrics.Counter(
            "farm_failures",
            description="Failed render attempts by reason.",
            tag_keys=("campaign", "reason"),
        )


@functools.cache
def _get() -> _Metrics:
    return _Metrics()


def _safely(fn):
    """Run a recording function; log and drop any error instead of raising it."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        try:
            fn(*args, **kwargs)
        except Exception:
            log.warning("could not record metric in %s", fn.__name__, exc_info=True)

    return wrapper


@_safely
def record_render(
    *,
    campaign: str,
    preset: str,
    width: int,
    height: int,
    seconds: float,
    frames: int | None = None,
    failure: str | None = None,
) -> None:
    """One finished render attempt: its time, GPU-seconds, and frames or failure reason."""
    m = _get()
    m.render_seconds.observe(seconds, tags={"preset": preset, "size": f"{width}x{height}"})
    m.gpu_seconds.inc(max(seconds, 0.0), tags={"campaign": campaign})
    if failure is None:
        m.frames.inc(frames or 0, tags={"campaign": campaign, "preset": preset})
    else:
        m.failures.inc(1, tags={"campaign": campaign, "reason": failure})


def record_attempt(row: Mapping[str, Any], seconds: float, failure: str | None) -> None:
    """One variant attempt of a campaign (a VARIANTS row): outcome, time, frames or reason."""
    campaign = str(row["campaign_id"])
    status = "completed" if failure is None else "failed"
    _count_variant(campaign, status)
    record_render(
        campaign=campaign,
        preset=str(row.get("preset") or "unknown"),
        width=int(row["width"]),
        height=int(row["height"]),
        seconds=seconds,
        frames=int(row["frames"]),
        failure=failure,
    )


@_safely
def _count_variant(campaign: str, status: str) -> None:
    _get().variants.inc(1, tags={"campaign": campaign, "status": status})


def record_video(status: str, preset: str, request: Any, seconds: float) -> None:
    """One `/v1/videos` render that ended (`completed` or `failed`; others are not counted)."""
    if status not in ("completed", "failed"):
        return
    record_render(
        campaign=ADHOC,
        preset=preset,
        width=int(request.width),
        height=int(request.height),
        seconds=seconds,
        frames=int(request.frames),
        failure=None if status == "completed" else "render_failed",
    )


def record_unfinished(campaign: str, statuses: Iterable[str]) -> None:
    """Set the queue depth from statuses: how many are `queued` or `in_progress`."""
    record_queue_depth(campaign, sum(s in ("queued", "in_progress") for s in statuses))


@_safely
def record_batch(preset: str, videos: int, window_steps: int) -> None:
    """One Renderer batch: how many videos' requests it merged and their window-steps."""
    m = _get()
    m.batch_size.observe(videos, tags={"preset": preset})
    m.window_steps.inc(window_steps, tags={"preset": preset})


@_safely
def record_queue_depth(campaign: str, depth: int) -> None:
    """Variants (or `adhoc` videos) accepted and not yet finished."""
    _get().queue_depth.set(max(depth, 0), tags={"campaign": campaign})


@_safely
def record_campaign_counts(campaign: str, by_status: Mapping[str, int]) -> None:
    """A campaign's variant counts by status (every status, zeros included)."""
    gauge = _get().campaign_variants
    for status, count in by_status.items():
        gauge.set(count, tags={"campaign": campaign, "status": status})


class CampaignProgressReporter:
    """Publishes a manifest's counts by status at most every `every_s` (reads cost I/O)."""

    def __init__(self, manifest: Any, every_s: float = 10.0) -> None:
        self.manifest = manifest
        self.every_s = every_s
        self._last = float("-inf")

    def update(self, force: bool = False) -> None:
        """Read the manifest's progress and set the gauges, unless done within `every_s`."""
        now = time.monotonic()
        if not force and now - self._last < self.every_s:
            return
        self._last = now
        try:
            by_status = self.manifest.progress().by_status
        except Exception:
            log.warning("could not read campaign progress for metrics", exc_info=True)
            return
        record_campaign_counts(self.manifest.campaign_id, by_status)
