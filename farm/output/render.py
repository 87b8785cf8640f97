"""The one render path: a variant or a request becomes a finished ad file.

    variant row / request → `RenderOrder` → `VideoJob` → window engine (any executor)
        → localized text overlay (when the order has copy)
        → packshot end card (when the variant's product has an image; farm.output.endcard)
        → MP4 + poster + provenance

Every caller goes through `render_video`: the campaign job loop (`farm.jobs.loop`, a
variant row, files under `{root}/outputs/{campaign_id}/`), the Director (`farm.serve`, an
HTTP request, files under `{root}/videos/`) and `farm render` (a `RenderRequest`, files
where `--out` says). Every frame carries an invisible watermark of the order's id, checked
on the encoded file (farm.output.watermark), and the id names the files.

An order is for one model: it carries that model's `Geometry` (`model.geometry`), which
turns a request's seconds into frames and which the engine checks frames and sizes by; a
variant row already carries its frame count and its model (`preset`) from the expansion.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from farm.output.endcard import apply_end_card
from farm.output.media import Provenance, VideoOutputs, write_video_outputs
from farm.output.overlay import render_overlay
from farm.output.request import RenderRequest
from farm.render.engine import VideoJob, render
from farm.render.protocols import Executor
from model.geometry import Geometry, geometry_of

__all__ = [
    "ADHOC",
    "Copy",
    "EndCardOrder",
    "RenderOrder",
    "RenderRequest",
    "output_dir",
    "render_video",
    "request_order",
    "variant_order",
    "video_job",
]

ADHOC = "adhoc"  # the campaign id of videos rendered outside a campaign


def output_dir(root: str, campaign_id: str) -> str:
    """Where a campaign's finished files go (ids are content hashes, never user text)."""
    return f"{root.rstrip('/')}/outputs/{campaign_id}"


@dataclass(frozen=True)
class Copy:
    """The localized text composited over a video (real text, never drawn by the model)."""

    headline: str
    cta: str
    locale: str
    aspect: str | None = None


@dataclass(frozen=True)
class EndCardOrder:
    """The packshot end card of an order (farm.output.endcard): images by resolved URL."""

    image: str  # the product's reference image
    seconds: float
    background: str  # #rrggbb
    logo: str | None = None


@dataclass(frozen=True)
class RenderOrder:
    """One video to render: what the engine samples, the copy on top, and its identity.

    `video_id` names the files and is the watermark's payload; `campaign_id` and `extra`
    go into the provenance record embedded in the MP4 and written beside it.
    """

    video_id: str
    geometry: Geometry  # the rendering model's frame rule, strides and longest window
    prompt: str
    negative_prompt: str
    frames: int
    width: int
    height: int
    fps: int
    steps: int
    guidance: float
    seed: int
    campaign_id: str = ADHOC
    copy: Copy | None = None
    extra: Mapping[str, str] = field(default_factory=dict)
    end_card: EndCardOrder | None = None


class _Request(Protocol):
    """What `request_order` reads: `RenderRequest` and the HTTP `VideoRequest` both have it."""

    prompt: str
    negative_prompt: str
    seconds: float
    fps: int
    width: int
    height: int
    steps: int
    guidance: float
    seed: int


def variant_order(row: Mapping[str, Any]) -> RenderOrder:
    """The order of a campaign variant (a row of farm.campaign.tables.VARIANTS)."""
    return RenderOrder(
        video_id=row["variant_id"],
        geometry=geometry_of(row["preset"]),
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"] or "",
        frames=int(row["frames"]),
        width=int(row["width"]),
        height=int(row["height"]),
        fps=int(row["fps"]),
        steps=int(row["steps"]),
        guidance=float(row["guidance"]),
        seed=int(row["seed"]),
        campaign_id=row["campaign_id"],
        copy=Copy(row["headline"], row["cta"], row["locale"], row["aspect"]),
        extra={"locale": row["locale"], "format": row["format"], "headline": row["headline"]},
        end_card=_end_card(row),
    )


def _end_card(row: Mapping[str, Any]) -> EndCardOrder | None:
    """A variant's end card: when its product has an image and the card has seconds."""
    image, seconds = row.get("reference_image"), row.get("end_card_s") or 0.0
    if not image or seconds <= 0:
        return None
    background = row.get("end_card_background") or "#ffffff"
    return EndCardOrder(image, float(seconds), background, row.get("logo"))


def request_order(
    request: _Request,
    video_id: str,
    geometry: Geometry,
    *,
    extra: Mapping[str, str] | None = None,
) -> RenderOrder:
    """The order of an ad-hoc request for the model of `geometry`; its seconds become the
    model's valid frame count."""
    return RenderOrder(
        video_id=video_id,
        geometry=geometry,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        frames=geometry.frames_for(request.seconds, request.fps),
        width=request.width,
        height=request.height,
        fps=request.fps,
        steps=request.steps,
        guidance=request.guidance,
        seed=request.seed,
        extra=dict(extra or {}),
    )


def video_job(order: RenderOrder, **engine: Any) -> VideoJob:
    """The engine job of an order (`engine`: window layout, sampler; the one place a
    VideoJob is built from an order)."""
    return VideoJob(
        geometry=order.geometry,
        prompt=order.prompt,
        negative_prompt=order.negative_prompt,
        frames=order.frames,
        height=order.height,
        width=order.width,
        fps=order.fps,
        steps=order.steps,
        guidance=order.guidance,
        seed=order.seed,
        **engine,
    )


def _card_images(card: EndCardOrder | None, storage_options: dict | None) -> tuple[Any, Any] | None:
    """The end card's packshot and logo, opened and checked (farm.campaign.images)."""
    if card is None:
        return None
    from farm.campaign.images import ImageAccess, open_image

    access = ImageAccess(storage_options=storage_options)
    logo = open_image(card.logo, access) if card.logo else None
    return open_image(card.image, access), logo


def render_video(
    executor: Executor,
    order: RenderOrder,
    out_dir: str,
    *,
    storage_options: dict | None = None,
    on_progress: Callable[[int, int], None] | None = None,
    **engine: Any,
) -> VideoOutputs:
    """Render, overlay and write one order as `{out_dir}/{video_id}.mp4|jpg|json`.

    `on_progress(done, total)` is called after every denoising step and once more after
    decoding, before anything is written (`total` = steps + 1): it may raise to stop the
    video (the Director cancels that way), and then nothing is written.
    """
    job = video_job(order, **engine)
    # The end card's images are opened first: a missing one fails before any GPU work.
    card = _card_images(order.end_card, storage_options)
    total = job.steps + 1  # decode + encode count as the last step

    def on_step(i: int, x: Any, t: Any) -> None:
        on_progress(i + 1, total)

    callback = on_step if on_progress is not None else None
    frames = render(executor, job, video=order.video_id, callback=callback)
    if on_progress is not None:
        on_progress(total, total)
    if order.copy is not None:
        frames = render_overlay(
            np.asarray(frames),
            headline=order.copy.headline,
            cta=order.copy.cta,
            locale=order.copy.locale,
            aspect=order.copy.aspect,
            fps=float(order.fps),
        )
    if order.end_card is not None:  # replaces the last frames: the length is unchanged
        copy = order.copy or Copy("", "", "en")
        frames = apply_end_card(
            np.asarray(frames),
            float(order.fps),
            seconds=order.end_card.seconds,
            packshot=card[0],
            logo=card[1],
            cta=copy.cta,
            locale=copy.locale,
            aspect=copy.aspect,
            background=order.end_card.background,
        )
    info = executor.model_info()
    provenance = Provenance(
        model=info["model"],
        weights_sha256=info["weights_sha256"],
        seed=order.seed,
        prompt=order.prompt,
        negative_prompt=order.negative_prompt,
        campaign_id=order.campaign_id,
        variant_id=order.video_id,
        extra=dict(order.extra),
    )
    return write_video_outputs(
        out_dir,
        order.video_id,
        frames,
        order.fps,
        provenance,
        fs_kwargs=storage_options or None,
        watermark=order.video_id,
    )
