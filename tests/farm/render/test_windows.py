"""Tests for farm.render.windows: window placement and blending weights."""

from __future__ import annotations

from itertools import pairwise

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.render.windows import RAMPS, WindowPlan, blend_weights, handover_frames, plan_windows


@st.composite
def plans(draw: st.DrawFn) -> tuple[int, int, int]:
    """(length, window, overlap) with 0 <= overlap < window."""
    window = draw(st.integers(1, 64))
    return draw(st.integers(1, 400)), window, draw(st.integers(0, window - 1))


@settings(max_examples=300, deadline=None)
@given(plans())
def test_plan_covers_video_with_equal_overlapping_windows(args: tuple[int, int, int]) -> None:
    length, window, overlap = args
    windows = plan_windows(length, window, overlap)
    assert windows[0][0] == 0
    assert windows[-1][1] == length
    assert all(stop - start == min(window, length) for start, stop in windows)
    starts = [start for start, _ in windows]
    assert starts == sorted(set(starts))  # strictly increasing, so no duplicates
    covered = torch.zeros(length, dtype=torch.bool)
    for start, stop in windows:
        covered[start:stop] = True
    assert covered.all()
    for (_, stop), (start, _) in pairwise(windows):
        assert stop - start >= overlap
    # Only the end-aligned last window may overlap more than asked.
    for (_, stop), (start, _) in pairwise(windows[:-1]):
        assert stop - start == overlap


@settings(max_examples=300, deadline=None)
@given(plans())
def test_weights_are_a_partition_of_unity(args: tuple[int, int, int]) -> None:
    length, window, overlap = args
    windows = plan_windows(length, window, overlap)
    frames = torch.arange(length)
    inside = torch.stack([(frames >= start) & (frames < stop) for start, stop in windows])
    for ramp in RAMPS:
        w = blend_weights(windows, length, ramp)
        assert w.shape == (len(windows), length)
        assert w.dtype == torch.float32
        assert (w[~inside] == 0).all()
        assert (w[inside] > 0).all()
        assert (w.double().sum(0) - 1).abs().max() <= 1e-6
        # The first and last frames are in one window only and must not be faded.
        assert w[0, 0] == 1.0
        assert w[-1, -1] == 1.0
        if ramp == "flat":
            continue
        # Where only two windows meet, one fades out while the other fades in.
        count = inside.sum(0)
        for i, ((_, stop), (start, _)) in enumerate(pairwise(windows)):
            if (count[start:stop] == 2).all():
                assert (w[i, start + 1 : stop] <= w[i, start : stop - 1]).all()
                assert (w[i + 1, start + 1 : stop] >= w[i + 1, start : stop - 1]).all()


def test_concrete_plans() -> None:
    assert plan_windows(10, 4, 2) == [(0, 4), (2, 6), (4, 8), (6, 10)]
    assert plan_windows(3, 8, 2) == [(0, 3)]
    assert plan_windows(8, 8, 0) == [(0, 8)]
    assert plan_windows(8, 4, 0) == [(0, 4), (4, 8)]
    # Stride 3 would put the next window at (6, 10); the last one is pulled back to end at 11.
    assert plan_windows(11, 4, 1) == [(0, 4), (3, 7), (6, 10), (7, 11)]


def test_cosine_ramp_is_monotone_and_symmetric_across_overlap() -> None:
    windows = [(0, 8), (4, 12)]
    w = blend_weights(windows, 12, "cosine")
    down, up = w[0, 4:8], w[1, 4:8]
    assert (down[1:] < down[:-1]).all()
    assert (up[1:] > up[:-1]).all()
    torch.testing.assert_close(down, up.flip(0))
    # Eased: the first step into the overlap is smaller than a linear ramp's.
    lin = blend_weights(windows, 12, "linear")
    assert 1 - w[0, 4] < 1 - lin[0, 4]
    assert torch.equal(w[0, :4], torch.ones(4)) and torch.equal(w[1, 8:], torch.ones(4))


@pytest.mark.parametrize("ramp", ["linear", "cosine"])
def test_ramps_monotone_on_planned_two_window_overlaps(ramp: str) -> None:
    windows = plan_windows(46, 16, 6)  # window <= 2 * stride: at most two windows per frame
    assert windows[-1] == (30, 46)
    w = blend_weights(windows, 46, ramp)
    for i, ((_, stop), (start, _)) in enumerate(pairwise(windows)):
        assert (w[i, start + 1 : stop] <= w[i, start : stop - 1]).all()
        assert (w[i + 1, start + 1 : stop] >= w[i + 1, start : stop - 1]).all()


def test_flat_ramp_averages() -> None:
    w = blend_weights(plan_windows(10, 4, 2), 10, "flat")
    assert torch.equal(w[0], torch.tensor([1, 1, 0.5, 0.5, 0, 0, 0, 0, 0, 0]))
    assert torch.equal(w[1, 2:6], torch.full((4,), 0.5))
    # Three windows over the middle frames: a uniform third each.
    w3 = blend_weights([(0, 6), (2, 8), (4, 10)], 10, "flat")
    torch.testing.assert_close(w3[:, 4:6], torch.full((3, 2), 1 / 3))


def test_many_windows_per_frame_are_normalised() -> None:
    windows = plan_windows(30, 10, 9)  # stride 1: up to ten windows per frame
    w = blend_weights(windows, 30, "cosine")
    assert (w.double().sum(0) - 1).abs().max() <= 1e-6
    # Deeper into a window counts for more: the middle window peaks mid-window.
    mid = w[len(windows) // 2]
    start, stop = windows[len(windows) // 2]
    assert mid[start:stop].argmax().item() in {(stop - start) // 2 - 1, (stop - start) // 2}


def test_handover_frames_are_mid_overlap() -> None:
    assert handover_frames(plan_windows(10, 4, 2)) == [3, 5, 7]
    assert handover_frames(plan_windows(8, 4, 0)) == [4]
    assert handover_frames([(0, 5)]) == []
    # From the hand-over frame on the next window weighs at least as much.
    windows = plan_windows(20, 8, 3)
    w = blend_weights(windows, 20)
    for i, b in enumerate(handover_frames(windows)):
        assert w[i + 1, b] >= w[i, b] and w[i + 1, b - 1] < w[i, b - 1]


def test_window_plan_bundles_everything() -> None:
    plan = WindowPlan.make(10, 4, 2, ramp="linear")
    assert plan.windows == ((0, 4), (2, 6), (4, 8), (6, 10))
    assert torch.equal(plan.weights, blend_weights(plan.windows, 10, "linear"))
    assert plan.handovers == [3, 5, 7]
    assert plan == WindowPlan.make(10, 4, 2, ramp="linear")
    assert hash(plan) == hash(WindowPlan.make(10, 4, 2, ramp="linear"))
    assert plan != WindowPlan.make(10, 4, 2)
    with pytest.raises(AttributeError):
        plan.length = 11  # type: ignore[misc]
    with pytest.raises(ValueError, match="do not match"):
        WindowPlan(10, 4, 2, "linear", ((0, 10),), plan.weights)
    with pytest.raises(ValueError, match="weights shape"):
        WindowPlan(10, 4, 2, "linear", plan.windows, plan.weights[:2])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ((10, 8, 8), r"overlap \(8\) must be smaller than window \(8\)"),
        ((10, 4, 9), r"overlap \(9\) must be smaller than window \(4\)"),
        ((10, 0, 0), "window must be >= 1"),
        ((10, 4, -1), "overlap must be >= 0"),
        ((0, 4, 1), "length must be >= 1"),
    ],
)
def test_bad_plan_arguments(args: tuple[int, int, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_windows(*args)
    with pytest.raises(ValueError, match=message):
        WindowPlan.make(*args)


def test_bad_blend_arguments() -> None:
    plan = plan_windows(10, 4, 2)
    with pytest.raises(ValueError, match="unknown ramp 'gauss'; known ramps: flat, linear, cosine"):
        blend_weights(plan, 10, "gauss")
    with pytest.raises(ValueError, match="unknown ramp"):
        WindowPlan.make(10, 4, 2, ramp="gauss")
    with pytest.raises(ValueError, match="at least one window"):
        blend_weights([], 10)
    with pytest.raises(ValueError, match="stop at frame 12"):
        blend_weights(plan, 12)
    with pytest.raises(ValueError, match="gap between"):
        blend_weights([(0, 4), (5, 10)], 10)
    with pytest.raises(ValueError, match="must increase"):
        blend_weights([(0, 8), (2, 6), (4, 10)], 10)
    with pytest.raises(ValueError, match="0 <= start < stop"):
        blend_weights([(0, 4), (4, 4), (4, 10)], 10)
