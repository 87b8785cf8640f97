"""Tests for farm.render.seams: the seam-visibility ratio and boundary helpers."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.render.seams import concat_boundaries, frame_diffs, pixel_boundaries, seam_ratio
from farm.render.windows import WindowPlan, plan_windows
from model.geometry import Geometry, geometry_of

FRAMES = 33


def moving_square(frames: int = FRAMES, height: int = 24, width: int = 64) -> np.ndarray:
    """uint8 [F, H, W, 3]: a gradient background with a bright square moving 1 px per frame."""
    x = np.linspace(0, 60, width, dtype=np.float64)
    video = np.broadcast_to(x[None, None, :, None], (frames, height, width, 3)).copy()
    for f in range(frames):
        video[f, 6:18, 10 + f : 22 + f] = 240
    return video.round().astype(np.uint8)


@settings(max_examples=50, deadline=None)
@given(st.sets(st.integers(1, FRAMES - 1), min_size=1, max_size=8))
def test_smooth_video_has_no_seams(boundaries: set[int]) -> None:
    assert seam_ratio(moving_square(), boundaries) == pytest.approx(1.0, abs=0.2)


@pytest.mark.parametrize("cut", [1, 9, 17, FRAMES - 1])
def test_hard_cut_at_boundary_is_visible(cut: int) -> None:
    video = moving_square()
    shifted = video.copy()
    shifted[cut:] = np.roll(video[cut:], 12, axis=2)  # content jumps sideways
    assert seam_ratio(shifted, [cut]) > 3
    brighter = video.astype(np.int16)
    brighter[cut:] += 15  # exposure jumps
    assert seam_ratio(brighter.clip(0, 255).astype(np.uint8), [cut]) > 3
    # The same cut measured at a different place reads as less change than ordinary motion.
    other = 5 if cut != 5 else 6
    assert seam_ratio(shifted, [other]) < 1


def test_inputs_torch_float_and_numpy_agree() -> None:
    video = moving_square()
    video[20:] = np.roll(video[20:], 5, axis=2)
    expected = seam_ratio(video, [20])
    assert seam_ratio(torch.from_numpy(video), [20]) == pytest.approx(expected)
    as_float = torch.from_numpy(video).float() / 255
    assert seam_ratio(as_float, [20]) == pytest.approx(expected, rel=1e-5)
    assert seam_ratio(as_float.bfloat16(), [20]) == pytest.approx(expected, rel=0.05)


def test_uint8_differences_do_not_wrap() -> None:
    video = np.zeros((3, 2, 2, 1), dtype=np.uint8)
    video[1] = 10  # 0 -> 10 -> 0: both transitions differ by 10, not 10 and 246
    assert frame_diffs(video).tolist() == [10.0, 10.0]


def test_static_and_degenerate_videos() -> None:
    static = np.full((10, 4, 4, 3), 7, dtype=np.uint8)
    assert seam_ratio(static, [3, 6]) == 1.0
    cut_only = static.copy()
    cut_only[5:] = 50
    assert seam_ratio(cut_only, [5]) == float("inf")
    assert seam_ratio(cut_only, [2]) == 0.0


def test_bad_inputs() -> None:
    video = moving_square(frames=8)
    with pytest.raises(ValueError, match="F >= 3"):
        seam_ratio(video[:2], [1])
    with pytest.raises(ValueError, match=r"\[F, H, W, C\]"):
        seam_ratio(video[..., 0], [1])
    with pytest.raises(ValueError, match="out of range"):
        seam_ratio(video, [8])
    with pytest.raises(ValueError, match="out of range"):
        seam_ratio(video, [0])
    with pytest.raises(ValueError, match="at least one boundary"):
        seam_ratio(video, [])
    with pytest.raises(ValueError, match="every transition"):
        seam_ratio(video, range(1, 8))
    with pytest.raises(TypeError):
        seam_ratio(video, [2.5])
    with pytest.raises(ValueError, match=">= 1"):
        concat_boundaries([4, 0, 4])


def test_pixel_boundaries_follow_the_models_frame_rule() -> None:
    tiny = geometry_of("tiny")
    # Latent hand-overs 3, 5, 7 start at pixel frames 4b - 3 (a 4n+1 model).
    assert pixel_boundaries(WindowPlan.make(10, 4, 2), tiny) == [9, 17, 25]
    assert pixel_boundaries(plan_windows(10, 4, 2), tiny) == [9, 17, 25]
    # No overlap: latent 4 (pixels 13..16) is the first of the second window.
    assert pixel_boundaries(plan_windows(8, 4, 0), tiny) == [13]
    assert pixel_boundaries(plan_windows(5, 8, 2), tiny) == []
    # An 8n+1 model (LTX-Video's layout) decodes the same hand-overs at 8b - 7.
    ltx = Geometry(model="ltx", temporal_stride=8, spatial_stride=32, pixel_multiple=32,
                   max_frames=257)  # fmt: skip
    assert pixel_boundaries(plan_windows(10, 4, 2), ltx) == [17, 33, 49]
    # Every boundary is a valid index into the decoded video.
    for g in (tiny, ltx):
        for length, window, overlap in [(2, 1, 0), (31, 8, 3), (64, 16, 15)]:
            frames = g.pixel_frames(length)
            boundaries = pixel_boundaries(plan_windows(length, window, overlap), g)
            assert all(1 <= p <= frames - 1 for p in boundaries)


def test_concat_boundaries() -> None:
    assert concat_boundaries([17, 16, 16]) == [17, 33]
    assert concat_boundaries([5]) == []
    assert concat_boundaries([]) == []
    # Independent chunks each restart the motion, so their joins jump and the metric sees it.
    chunks = [moving_square(frames=11)] * 3
    assert seam_ratio(np.concatenate(chunks), concat_boundaries([11, 11, 11])) > 3
