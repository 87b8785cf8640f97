"""Seam metric: how much more a video changes where windows hand over than elsewhere.

Conventions and invariants (checked by tests/farm/render/test_seams.py):

- A video is [F, H, W, C] pixel frames, uint8 or float, numpy or torch. A boundary is the index
  p of the first pixel frame of the next part, so it names the transition from frame p - 1 to
  frame p and must satisfy 1 <= p <= F - 1.
- A latent boundary b >= 1 is the pixel boundary where latent frame b's pixel frames begin,
  by the model's frame rule (`Geometry.first_pixel_frame`); this module keeps no copy of
  the rule.
- `seam_ratio` is 1.0 when seams change the picture exactly as much as ordinary motion does,
  >> 1 for a visible cut, 1.0 for a static video and inf when only the seams change anything.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from farm.render.windows import WindowPlan, handover_frames
from model.geometry import Geometry

__all__ = ["concat_boundaries", "frame_diffs", "pixel_boundaries", "seam_ratio"]


def pixel_boundaries(plan: WindowPlan | Sequence[tuple[int, int]], geometry: Geometry) -> list[int]:
    """Pixel boundaries of a window plan's hand-over points (mid-overlap, in latent frames),
    where `geometry`'s model decodes them."""
    windows = plan.windows if isinstance(plan, WindowPlan) else plan
    # Hand-overs are >= 1 because every window after the first starts at latent frame >= 1.
    return [int(geometry.first_pixel_frame(b)) for b in handover_frames(windows)]


def concat_boundaries(chunk_frames: Sequence[int]) -> list[int]:
    """Pixel boundaries of chunks of these frame counts concatenated end to end."""
    boundaries, total = [], 0
    for n in chunk_frames:
        if n < 1:
            raise ValueError(f"chunk frame counts must be >= 1 (got {n})")
        total += n
        boundaries.append(total)
    return boundaries[:-1]  # the end of the last chunk is the end of the video, not a seam


def frame_diffs(video: np.ndarray | torch.Tensor) -> np.ndarray:
    """Mean absolute difference d[f] between frames f and f + 1 of an [F, H, W, C] video."""
    if isinstance(video, torch.Tensor):
        video = video.detach().cpu()
        if video.dtype == torch.bfloat16:
            video = video.to(torch.float32)  # numpy has no bfloat16
        video = video.numpy()
    video = np.asarray(video)
    if video.ndim != 4:
        raise ValueError(f"video must be [F, H, W, C] (got shape {video.shape})")
    # Frame by frame in float64: uint8 would wrap around, and one float64 copy of a long video
    # could take gigabytes.
    return np.array(
        [
            np.abs(video[f + 1].astype(np.float64) - video[f].astype(np.float64)).mean()
            for f in range(video.shape[0] - 1)
        ]
    )


def seam_ratio(video: np.ndarray | torch.Tensor, boundaries: Iterable[int]) -> float:
    """How visible the seams are: mean change at the boundaries over mean change elsewhere."""
    frames = video.shape[0] if video.ndim == 4 else 0
    if frames < 3:
        raise ValueError(f"video must be [F, H, W, C] with F >= 3 (got shape {tuple(video.shape)})")
    seams = sorted({operator.index(p) for p in boundaries})
    if not seams:
        raise ValueError("need at least one boundary")
    for p in seams:
        if not 1 <= p <= frames - 1:
            raise ValueError(f"boundary {p} out of range: need 1 <= boundary <= {frames - 1}")
    if len(seams) == frames - 1:
        raise ValueError("every transition is a boundary: nothing to compare the seams against")
    d = frame_diffs(video)
    at_seam = np.zeros(len(d), dtype=bool)
    at_seam[[p - 1 for p in seams]] = True  # boundary p is the transition p - 1 -> p, i.e. d[p - 1]
    seam, interior = float(d[at_seam].mean()), float(d[~at_seam].mean())
    if interior == 0.0:
        return 1.0 if seam == 0.0 else float("inf")
    return seam / interior
