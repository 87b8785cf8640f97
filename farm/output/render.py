"""Render one campaign variant into a finished ad file.

variant row → window engine (any executor) → localized text overlay → MP4 + poster +
provenance sidecar under `{root}/outputs/{campaign_id}/{variant_id}.*`. This is the
Encoder stage's work; the campaign job and the Serve app call it. Every frame carries an
invisible watermark of the variant id, checked on the encoded file (farm.output.watermark).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from farm.output.media import Provenance, VideoOutputs, write_video_outputs
from farm.output.overlay import render_overlay
from farm.render.engine import Executor, VideoJob, render


def output_dir(root: str, campaign_id: str) -> str:
    """Where a campaign's finished files go (ids are content hashes, never user text)."""
    return f"{root.rstrip('/')}/outputs/{campaign_id}"


def variant_job(row: dict[str, Any], **engine: Any) -> VideoJob:
    """The engine job of a variant row (columns of farm.schemas.VARIANTS)."""
    return VideoJob(
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"] or "",
        frames=int(row["frames"]),
        height=int(row["height"]),
        width=int(row["width"]),
        fps=int(row["fps"]),
        steps=int(row["steps"]),
        guidance=float(row["guidance"]),
        seed=int(row["seed"]),
        **engine,
    )


def render_variant(
    executor: Executor,
    row: dict[str, Any],
    root: str,
    *,
    storage_options: dict | None = None,
    **engine: Any,
) -> VideoOutputs:
    """Render, overlay and write one variant; returns where the files went."""
    frames = render(executor, variant_job(row, **engine), video=row["variant_id"])
    frames = render_overlay(
        np.asarray(frames),
        headline=row["headline"],
        cta=row["cta"],
        locale=row["locale"],
        aspect=row["aspect"],
        fps=float(row["fps"]),
    )
    info = executor.model_info()
    provenance = Provenance(
        model=info["model"],
        weights_sha256=info["weights_sha256"],
        seed=int(row["seed"]),
        prompt=row["prompt"],
        negative_prompt=row["negative_prompt"] or "",
        campaign_id=row["campaign_id"],
        variant_id=row["variant_id"],
        extra={"locale": row["locale"], "format": row["format"], "headline": row["headline"]},
    )
    return write_video_outputs(
        output_dir(root, row["campaign_id"]),
        row["variant_id"],
        frames,
        int(row["fps"]),
        provenance,
        fs_kwargs=storage_options,
        watermark=row["variant_id"],
    )
