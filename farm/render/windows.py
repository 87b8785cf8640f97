"""Temporal windows for long videos: where each window sits and how much it counts at each frame.

A long latent video of `length` frames is split along time into windows of `window` frames that
are denoised independently and blended back together at every sampling step.

Invariants (checked by tests/farm/render/test_windows.py):

- `plan_windows` returns (start, stop) ranges with starts strictly increasing, the first start 0
  and the last stop `length`; every window has min(window, length) frames, so every frame is
  covered. Consecutive windows overlap by at least `overlap` frames; only the last one may overlap
  more, because it is aligned to the end of the video rather than to the stride.
- `blend_weights` gives every window a weight at every frame: 0 outside the window, > 0 inside
  it, and the weights of all windows sum to 1 at every frame. A frame covered by one window only
  (always true of the first and last frame of the video) weighs exactly 1 in it.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import pairwise

import torch

__all__ = ["RAMPS", "WindowPlan", "blend_weights", "handover_frames", "plan_windows"]

Window = tuple[int, int]

RAMPS = ("flat", "linear", "cosine")


def plan_windows(length: int, window: int, overlap: int) -> list[Window]:
    """Equal-sized (start, stop) latent-frame ranges covering [0, length) with `overlap` overlap."""
    if length < 1:
        raise ValueError(f"length must be >= 1 (got {length})")
    if window < 1:
        raise ValueError(f"window must be >= 1 (got {window})")
    if overlap < 0:
        raise ValueError(f"overlap must be >= 0 (got {overlap})")
    if overlap >= window:
        raise ValueError(f"overlap ({overlap}) must be smaller than window ({window})")
    if length <= window:
        return [(0, length)]
    stride = window - overlap
    # Stop before a window would reach the end: the end-aligned window below covers the rest, and
    # a strict `<` keeps it from duplicating the last strided one.
    windows = [(start, start + window) for start in range(0, length - window, stride)]
    windows.append((length - window, length))
    return windows


def _check_plan(plan: Sequence[Window], length: int) -> None:
    if length < 1:
        raise ValueError(f"length must be >= 1 (got {length})")
    if not plan:
        raise ValueError("plan must have at least one window")
    for start, stop in plan:
        if not 0 <= start < stop <= length:
            raise ValueError(f"window ({start}, {stop}) must satisfy 0 <= start < stop <= {length}")
    if plan[0][0] != 0 or plan[-1][1] != length:
        raise ValueError(f"plan must start at frame 0 and stop at frame {length}")
    for (s0, e0), (s1, e1) in pairwise(plan):
        # Edges are ramped against the neighbour only, so windows must be ordered and gap-free.
        if not (s0 < s1 and e0 < e1):
            raise ValueError(f"windows ({s0}, {e0}), ({s1}, {e1}): starts and stops must increase")
        if s1 > e0:
            raise ValueError(f"gap between windows ({s0}, {e0}) and ({s1}, {e1})")


def _ramp_up(n: int, ramp: str) -> torch.Tensor:
    """Raw weight rising across an n-frame overlap, strictly inside (0, 1) so no frame drops out."""
    t = (torch.arange(n, dtype=torch.float64) + 0.5) / n
    if ramp == "linear":
        return t
    return 0.5 - 0.5 * torch.cos(math.pi * t)  # cosine: zero slope at both ends of the overlap


def blend_weights(plan: Sequence[Window], length: int, ramp: str = "cosine") -> torch.Tensor:
    """Per-window blending weights [len(plan), length] (float32) that sum to 1 at every frame."""
    if ramp not in RAMPS:
        raise ValueError(f"unknown ramp {ramp!r}; known ramps: {', '.join(RAMPS)}")
    # operator.index rejects floats instead of silently truncating them.
    plan = [(operator.index(s), operator.index(e)) for s, e in plan]
    _check_plan(plan, length)
    # Built in float64 so the float32 result sums to 1 to within float32 rounding.
    raw = torch.zeros(len(plan), length, dtype=torch.float64)
    for i, (start, stop) in enumerate(plan):
        raw[i, start:stop] = 1.0
        if ramp == "flat":
            continue
        if i > 0 and (n := plan[i - 1][1] - start) > 0:
            raw[i, start : start + n] *= _ramp_up(n, ramp)
        if i + 1 < len(plan) and (n := stop - plan[i + 1][0]) > 0:
            # Mirror image of the neighbour's ramp-up, so two windows already sum to 1 here.
            raw[i, stop - n : stop] *= _ramp_up(n, ramp).flip(0)
    # Where three or more windows meet, ramps multiply and no longer sum to 1: normalise.
    weights = raw / raw.sum(dim=0, keepdim=True)
    return weights.to(torch.float32)


def handover_frames(plan: Sequence[Window]) -> list[int]:
    """Latent frame where each window hands over to the next: the middle of their overlap.

    For an overlap [s, e) that is (s + e) // 2 and with no overlap the hard cut at s. Where only
    the two windows meet, this is the first frame at which the later one weighs at least as much
    as the earlier one, under every ramp (the ramps are symmetric about mid-overlap).
    """
    return [(nxt[0] + cur[1]) // 2 for cur, nxt in pairwise(plan)]


@dataclass(frozen=True)
class WindowPlan:
    """Everything the engine needs to split, denoise and re-blend one video along time.

    `weights` is shared, not copied: treat it as read-only. Equality and hashing use the
    arguments and windows only, since the weights follow from them.
    """

    length: int
    window: int
    overlap: int
    ramp: str
    windows: tuple[Window, ...]
    weights: torch.Tensor = field(compare=False, repr=False)

    def __post_init__(self) -> None:
        if list(self.windows) != plan_windows(self.length, self.window, self.overlap):
            raise ValueError("windows do not match plan_windows(length, window, overlap)")
        if tuple(self.weights.shape) != (len(self.windows), self.length):
            raise ValueError(
                f"weights shape {tuple(self.weights.shape)} must be "
                f"({len(self.windows)}, {self.length})"
            )

    @classmethod
    def make(cls, length: int, window: int, overlap: int, ramp: str = "cosine") -> WindowPlan:
        """Plan the windows of a `length`-frame latent video and their blending weights."""
        windows = plan_windows(length, window, overlap)
        weights = blend_weights(windows, length, ramp)
        return cls(length, window, overlap, ramp, tuple(windows), weights)

    @property
    def handovers(self) -> list[int]:
        """Latent frames where each window hands over to the next (see `handover_frames`)."""
        return handover_frames(self.windows)
