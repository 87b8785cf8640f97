"""A diffusers checkpoint (tiny random Wan 2.1) on the unchanged window engine and executors.

The engine asks the model for its schedule and shapes; windows and both CFG branches of a
step share forwards with per-sample t; prompts are encoded once per video; a pool of Ray
actors gives the same latents as this process.
"""

from __future__ import annotations

import itertools

import pytest

import model
from farm.render.engine import VideoJob, WindowStep, sample_latents
from farm.render.executors import LocalExecutor, RayExecutor
from model.generate import noise
from model.sampling import cfg, euler, flow_timesteps

PROMPT, NEGATIVE, GUIDANCE = "a red bottle on a beach", "blurry", 5.0


def job(ref: str, **overrides) -> VideoJob:
    fields = dict(
        geometry=ref,
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        frames=4 * 8 + 1,  # 9 latent frames
        height=32,
        width=32,
        steps=3,
        guidance=GUIDANCE,
        window=9,
        overlap=0,
        seed=5,
    )
    return VideoJob(**(fields | overrides))


@pytest.fixture(scope="module")
def wan(tiny_wan):
    return model.load(tiny_wan)


def test_one_window_equals_the_direct_loop(tiny_wan, wan):
    j = job(tiny_wan)
    assert len(j.plan().windows) == 1
    z = sample_latents(LocalExecutor(wan), j)
    x = noise((1, *wan.latent_shape(j.frames, j.height, j.width)), j.seed)
    ts = wan.timesteps(j.steps, j.frames, j.height, j.width)
    cond, uncond = wan.encode_text([PROMPT]), wan.encode_text([NEGATIVE])
    direct = euler(cfg(wan.velocity, cond, uncond, GUIDANCE), x, ts)
    assert (z - direct).abs().max() <= 1e-4


def test_windows_and_both_branches_share_forwards_with_per_sample_t(tiny_wan, wan):
    ex = LocalExecutor(wan, max_batch=8)
    latent = noise((1, *wan.latent_shape(33, 32, 32)), 3)[0]
    steps = [  # two windows of one video, and a window of another video at another t
        WindowStep(latent, 0, 5, 0.9, PROMPT, NEGATIVE, GUIDANCE),
        WindowStep(latent, 4, 9, 0.9, PROMPT, NEGATIVE, GUIDANCE),
        WindowStep(latent, 2, 7, 0.4, "a blue can", NEGATIVE, GUIDANCE),
    ]
    together = ex.velocities(steps)
    assert ex.worker.batch_sizes == [6]  # 3 windows x 2 branches: one forward
    alone = [ex.velocities([s])[0] for s in steps]
    for a, b in zip(together, alone, strict=True):
        assert (a - b).abs().max() <= 1e-5


def test_prompts_are_encoded_once_per_video_not_per_window_step(tiny_wan, wan):
    ex = LocalExecutor(wan, max_batch=4)
    j = job(tiny_wan, window=4, overlap=2, steps=4)
    assert len(j.plan().windows) >= 3
    sample_latents(ex, j)
    assert ex.worker.encoded == 2  # the prompt and the negative, for 3+ windows x 4 steps
    assert sum(ex.worker.batch_sizes) == 2 * len(j.plan().windows) * j.steps


def test_ray_actors_give_the_local_latents(ray_cluster, tiny_wan, wan):
    j = job(tiny_wan, window=4, overlap=2)
    local = sample_latents(LocalExecutor(wan), j)
    ex = RayExecutor(tiny_wan, num_actors=2, max_batch=4)
    try:
        pooled = sample_latents(ex, j)
        stats = ex.stats()
    finally:
        ex.close()
    assert (pooled - local).abs().max() <= 1e-4
    assert all(s["forwards"] > 0 for s in stats)


def test_the_schedule_is_the_checkpoints(tiny_wan, wan):
    ts = LocalExecutor(wan).timesteps(4, 33, 32, 32)
    assert ts == pytest.approx(wan.timesteps(4).tolist())
    assert ts[0] == 1.0 and ts[-1] == 0.0 and all(a > b for a, b in itertools.pairwise(ts))
    # diffusers' Euler schedule (it stops at its last sigma), not a generic one
    assert ts != pytest.approx(flow_timesteps(4, wan.default_shift).tolist())
    assert LocalExecutor("tiny").timesteps(4, 17, 32, 32) == flow_timesteps(4, 3.0).tolist()
