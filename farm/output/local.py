"""Render one video in this process and write it as a finished ad file (MP4 + poster + JSON).

The in-process path of `farm render`: window engine on a `LocalExecutor` → frames →
`farm.output.media`. Seconds become frames of the form 4n+1 (the VAE's causal layout).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass

import model
from farm.output.media import Provenance, VideoOutputs, write_video_outputs


def frames_for(seconds: float, fps: int) -> int:
    """The frame count of the form 4n+1 closest to `seconds` at `fps` (at least 5)."""
    if seconds <= 0 or fps <= 0:
        raise ValueError(f"seconds and fps must be positive, got {seconds} s at {fps} fps")
    n = max(1, round(seconds * fps / 4))
    return 4 * n + 1


def parse_size(size: str) -> tuple[int, int]:
    """'WxH' → (width, height), with a clear error for anything else."""
    try:
        width, height = (int(part) for part in size.lower().split("x"))
    except ValueError:
        raise ValueError(f"size must look like WIDTHxHEIGHT, e.g. 256x144; got {size!r}") from None
    return width, height


@dataclass(frozen=True)
class RenderRequest:
    """What to render: prompt, look and length."""

    prompt: str
    negative_prompt: str = ""
    seconds: float = 1.0
    fps: int = 24
    width: int = 256
    height: int = 144
    steps: int = 12
    guidance: float = 4.0
    seed: int = 0
    preset: str = "small"

    @property
    def frames(self) -> int:
        return frames_for(self.seconds, self.fps)

    def video_id(self) -> str:
        """Content hash of the request: the same request names the same file."""
        return hashlib.sha256(repr(self).encode()).hexdigest()[:16]


def render_to_storage(
    request: RenderRequest,
    out_root: str,
    *,
    m: model.VideoModel | None = None,
    on_step: Callable[[int], None] | None = None,
) -> VideoOutputs:
    """Render `request` in-process and write `{out_root}/{video_id}.mp4/.jpg/.json`.

    Goes through the same window engine as the farm (a `LocalExecutor`), so a video rendered
    here and one rendered by the cluster come from one code path.
    """
    from farm.render.engine import VideoJob, render  # here: frames_for/parse_size stay Ray-free
    from farm.render.executors import LocalExecutor

    executor = LocalExecutor(m or request.preset)
    job = VideoJob(
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        frames=request.frames,
        height=request.height,
        width=request.width,
        fps=request.fps,
        steps=request.steps,
        guidance=request.guidance,
        seed=request.seed,
    )
    frames = render(executor, job, callback=(lambda i, x, t: on_step(i)) if on_step else None)
    info = executor.model_info()
    provenance = Provenance(
        model=info["model"],
        weights_sha256=info["weights_sha256"],
        seed=request.seed,
        prompt=request.prompt,
        negative_prompt=request.negative_prompt,
        campaign_id="adhoc",
        variant_id=request.video_id(),
    )
    video_id = request.video_id()
    return write_video_outputs(
        out_root, video_id, frames, request.fps, provenance, watermark=video_id
    )
