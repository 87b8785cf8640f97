"""Halo exchange: the sharded rounds equal the driver-fused engine, on any grouping."""

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.render.engine import VideoJob, sample_latents
from farm.render.halo import HaloLayout, run_rounds_here, window_advancer
from farm.testing.velocity_fields import FunctionExecutor


def window_mixing(x, t, prompt):
    """A velocity that mixes frames in time inside its window (so windows disagree)."""
    return 0.3 * x - 0.5 * x.mean(dim=1, keepdim=True) + 0.01 * len(prompt) * t


class HaloFunctionExecutor(FunctionExecutor):
    """FunctionExecutor whose rounds run through farm.render.halo in this process."""

    def __init__(self, fn, per_group: int):
        super().__init__(fn)
        self.per_group = per_group

    def run_rounds(self, x, plan, rounds, prompts, negative, guidance, on_round=None):
        layout = HaloLayout.make(plan, self.per_group)
        advance = window_advancer(self.velocities, negative, guidance)
        z = run_rounds_here(layout, x[0].numpy(), rounds, prompts, advance)
        return torch.from_numpy(z)[None]


def job(length: int, window: int, overlap: int, sync_every: int = 1, **kw) -> VideoJob:
    return VideoJob(
        geometry="tiny",  # FunctionExecutor's latent layout
        prompt="a blue shoe",
        frames=4 * (length - 1) + 1,
        height=16,
        width=16,
        steps=4,
        window=window,
        overlap=overlap,
        sync_every=sync_every,
        guidance=2.5,
        negative_prompt="blur",
        **kw,
    )


@settings(max_examples=40, deadline=None)
@given(
    length=st.integers(1, 30),
    window=st.integers(1, 12),
    data=st.data(),
)
def test_halo_rounds_equal_driver_fusion(length, window, data):
    overlap = data.draw(st.integers(0, window - 1))
    per_group = data.draw(st.integers(1, 4))
    sync_every = data.draw(st.sampled_from([1, 2, 4]))
    ramp = data.draw(st.sampled_from(["flat", "linear", "cosine"]))
    j = job(length, window, overlap, sync_every, ramp=ramp)
    expected = sample_latents(FunctionExecutor(window_mixing), j)
    got = sample_latents(HaloFunctionExecutor(window_mixing, per_group), j)
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5


def test_grouping_does_not_change_a_bit():
    """Every frame sums its windows' parts in window order, whoever holds it."""
    j = job(40, 8, 5)  # overlap > window/2: frames covered by three windows
    assert any(
        b0 > a2 for (_, b0), (a2, _) in zip(j.plan().windows, j.plan().windows[2:], strict=False)
    )
    results = [sample_latents(HaloFunctionExecutor(window_mixing, k), j) for k in (1, 2, 3, 7)]
    for z in results[1:]:
        assert torch.equal(z, results[0])


def test_layout_groups_peers_and_owned_ranges():
    plan = job(30, 8, 2).plan()  # windows (0,8) (6,14) (12,20) (18,26) (22,30)
    layout = HaloLayout.make(plan, 2)
    assert layout.groups == ((0, 1), (2, 3), (4,))
    assert [layout.span(g) for g in range(3)] == [(0, 14), (12, 26), (22, 30)]
    assert layout.peers == ((0, 1), (0, 1, 2), (1, 2))
    owned = [layout.owned(g) for g in range(3)]
    assert owned == [(0, 14), (14, 26), (26, 30)]  # a partition of the video
    # Group 0 sends group 1 the frames of window 1 inside span(1): 12..14.
    assert layout.exchanged_frames(0, 1) == 2
    with pytest.raises(ValueError, match="per_group"):
        HaloLayout.make(plan, 0)


def test_first_round_slices_the_noise_and_final_round_returns_owned_frames():
    plan = job(12, 6, 2).plan()
    layout = HaloLayout.make(plan, 1)
    latent = np.arange(2 * 12 * 4, dtype=np.float32).reshape(2, 12, 2, 2)
    identity = window_advancer(lambda steps: [torch.zeros_like(s.x) for s in steps], "", 1.0)
    z = run_rounds_here(layout, latent, [[1.0, 0.5]], ["p"] * len(plan.windows), identity)
    np.testing.assert_allclose(z, latent, rtol=0, atol=1e-5)  # zero velocity: nothing moves
