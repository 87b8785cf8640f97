"""The window engine: windowed == unwindowed where it must be, seams, batching, storyboards."""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from farm.render.engine import Segment, VideoJob, blend, sample_latents
from farm.render.executors import LocalExecutor
from farm.render.seams import seam_ratio
from farm.render.windows import plan_windows
from farm.testing.velocity_fields import FunctionExecutor, framewise, temporal_gaussian
from model.geometry import Geometry, geometry_of

# FunctionExecutor's latent layout is the bundled presets' (tiny's) geometry.
TINY = geometry_of("tiny")
# The same layout from a model that takes any clip in one forward: unwindowed references.
WHOLE = TINY.model_copy(update={"max_frames": TINY.pixel_frames(64)})


def job(**kw) -> VideoJob:
    base = dict(
        geometry=WHOLE,
        prompt="a red bottle",
        frames=TINY.pixel_frames(24),
        height=32,
        width=32,
        steps=6,
        seed=3,
    )
    return VideoJob(**(base | kw))


@settings(max_examples=40, deadline=None)
@given(
    latent=st.integers(1, 30),
    window=st.integers(1, 12),
    overlap_frac=st.floats(0, 0.9),
    ramp=st.sampled_from(["flat", "linear", "cosine"]),
    sampler=st.sampled_from(["euler", "heun"]),
    guidance=st.sampled_from([1.0, 3.0]),
)
def test_windowed_equals_unwindowed_for_framewise_velocity(
    latent, window, overlap_frac, ramp, sampler, guidance
):
    overlap = min(window - 1, int(overlap_frac * window))
    common = dict(
        frames=TINY.pixel_frames(latent),
        sampler=sampler,
        guidance=guidance,
        negative_prompt="dark",
        steps=4,
    )
    ex = FunctionExecutor(framewise)
    windowed = sample_latents(ex, job(window=window, overlap=overlap, ramp=ramp, **common))
    whole = sample_latents(ex, job(window=latent, overlap=0, **common))
    assert (windowed - whole).abs().max() <= 1e-5


def test_fusion_beats_independent_chunks_on_seams():
    ex = FunctionExecutor(temporal_gaussian(rho=0.95))
    fused_job = job(window=8, overlap=4, guidance=1.0, steps=10)
    fused = sample_latents(ex, fused_job)
    plan = fused_job.plan()
    # Independent chunks: each 8-frame chunk sampled alone from its slice of the same noise.
    chunks = plan_windows(fused_job.latent_frames, 8, 0)
    chunk_job = job(window=8, overlap=0, guidance=1.0, steps=10)
    independent = sample_latents(ex, chunk_job)  # overlap 0 = no exchange between chunks
    as_frames = lambda z: z[0].permute(1, 2, 3, 0)  # (T, H, W, C)
    fused_ratio = seam_ratio(as_frames(fused), plan.handovers)
    independent_ratio = seam_ratio(as_frames(independent), [a for a, _ in chunks[1:]])
    assert independent_ratio > 1.5  # the chunks really are discontinuous
    assert fused_ratio < 1.25 and fused_ratio < independent_ratio


def test_sync_every_trades_exchanges_for_seams():
    ex = FunctionExecutor(temporal_gaussian(rho=0.95))
    every = sample_latents(ex, job(window=8, overlap=4, guidance=1.0, steps=8, sync_every=1))
    ex_rare = FunctionExecutor(temporal_gaussian(rho=0.95))
    rare = sample_latents(ex_rare, job(window=8, overlap=4, guidance=1.0, steps=8, sync_every=4))
    assert ex_rare.calls == ex.calls  # same window-steps, only fewer fusions
    assert not torch.allclose(every, rare)
    plan = job(window=8, overlap=4).plan()
    ratio = lambda z: seam_ratio(z[0].permute(1, 2, 3, 0), plan.handovers)
    assert ratio(every) <= ratio(rare) + 0.05


def test_sync_every_at_least_steps_is_independent_windows_blended_once():
    ex = FunctionExecutor(temporal_gaussian(rho=0.9))
    j = job(window=8, overlap=4, guidance=1.0, steps=5, sync_every=5)
    fused_once = sample_latents(ex, j)
    plan = j.plan()
    parts = [
        sample_latents(
            ex, job(frames=TINY.pixel_frames(b - a), window=8, overlap=4, guidance=1.0, steps=5)
        )
        for a, b in plan.windows
    ]
    # Each part above starts from its own noise; redo with the shared noise slices instead.
    from model.generate import noise
    from model.sampling import euler

    x = noise((1, *ex.latent_shape(j.frames, 32, 32)), j.seed)
    ts = torch.tensor(ex.timesteps(5, j.frames, 32, 32))
    fn = temporal_gaussian(rho=0.9)
    parts = [
        euler(lambda z, t: fn(z[0], float(t[0]), "")[None], x[:, :, a:b], ts)
        for a, b in plan.windows
    ]
    assert (fused_once - blend(parts, plan)).abs().max() <= 1e-5


def test_storyboard_conditions_each_window_on_its_shot():
    board = (
        Segment(start=0, end=2, prompt="a red bottle"),
        Segment(start=2, end=10, prompt="a blue shoe"),
    )
    j = job(frames=TINY.pixel_frames(24), fps=12, window=6, overlap=2, storyboard=board)
    prompts = j.window_prompts(j.plan())
    assert prompts[0] == "a red bottle" and prompts[-1] == "a blue shoe"
    assert prompts == sorted(prompts, key=lambda p: p != "a red bottle")  # one cut, in order
    with pytest.raises(ValueError, match=r"end \(1.0\) must be after start \(2.0\)"):
        Segment(start=2, end=1, prompt="x")


def test_bad_jobs_name_the_field():
    with pytest.raises(ValueError, match="overlap \\(8\\) must be smaller than window \\(8\\)"):
        job(window=8, overlap=8)
    with pytest.raises(
        ValueError, match=r"frames must be of the form 4n\+1 .* model 'tiny', got 10"
    ):
        job(frames=10)
    with pytest.raises(
        ValueError, match=r"width 40 must be a positive multiple of 16 \(model 'tiny'\)"
    ):
        job(width=40)
    with pytest.raises(ValueError, match=r"geometry\n +Field required"):
        VideoJob(prompt="x")  # a job is always for one model: no default geometry
    with pytest.raises(ValueError, match="model 'huge' is neither a preset"):
        job(geometry="huge")
    with pytest.raises(ValueError, match="sync_every > 1 needs the euler sampler"):
        job(sampler="heun", sync_every=2)


@pytest.fixture(scope="module")
def tiny_local():
    return LocalExecutor("tiny", max_batch=8)


def test_same_seed_same_latents_with_max_batch_1_and_8(tiny_local):
    j = job(geometry=TINY, frames=TINY.pixel_frames(12), window=4, overlap=2, steps=3, guidance=3.0)
    eight = sample_latents(tiny_local, j)
    assert max(tiny_local.worker.batch_sizes) == 8  # batching really happened
    one = sample_latents(LocalExecutor(tiny_local.worker.model, max_batch=1), j)
    assert (eight - one).abs().max() <= 1e-4


def test_guidance_is_applied_per_window():
    ex = FunctionExecutor(framewise)
    plain = sample_latents(ex, job(guidance=1.0, window=6, overlap=2))
    guided = sample_latents(ex, job(guidance=3.0, negative_prompt="dark", window=6, overlap=2))
    other_negative = sample_latents(
        ex, job(guidance=3.0, negative_prompt="blur", window=6, overlap=2)
    )
    assert not torch.allclose(plain, guided) and not torch.allclose(guided, other_negative)


def test_a_model_reference_names_the_geometry():
    assert job(geometry="tiny").geometry == TINY
    assert job(geometry="small").geometry == geometry_of("small")


def test_windows_never_exceed_what_the_model_takes_in_one_forward():
    j = job(geometry=TINY, frames=TINY.pixel_frames(40), window=32, overlap=4)
    plan = j.plan()
    assert max(b - a for a, b in plan.windows) == TINY.max_latent_frames < 32
    assert plan.windows[-1][1] == 40 and len(plan.windows) == 3
    assert len(job(frames=TINY.pixel_frames(40), window=32, overlap=4).plan().windows) == 2


# A model with another rule (LTX-Video style: 8n+1 frames, a latent frame per 8 pixel frames).
LTX = Geometry(model="ltx", temporal_stride=8, spatial_stride=8, pixel_multiple=16, max_frames=257)


def test_storyboard_seconds_follow_the_models_frame_rule():
    board = (Segment(start=0, end=2, prompt="first"), Segment(start=2, end=60, prompt="second"))
    kw = dict(fps=12, window=4, overlap=0, storyboard=board)
    four = job(geometry=TINY, frames=TINY.pixel_frames(16), **kw)
    eight = job(geometry=LTX, frames=LTX.pixel_frames(16), **kw)
    assert four.plan().windows == eight.plan().windows  # the same latent windows ...
    # ... cover twice the seconds with 8 pixel frames per latent frame: middles at latent
    # 1.5, 5.5, 9.5, 13.5 are pixel frames 3, 19, 35, 51 (4n+1) or 5, 37, 69, 101 (8n+1),
    # at 12 fps 0.25, 1.6, 2.9, 4.3 s or 0.4, 3.1, 5.8, 8.4 s; the cut is at 2 s.
    assert four.window_prompts(four.plan()) == ["first", "first", "second", "second"]
    assert eight.window_prompts(eight.plan()) == ["first", "second", "second", "second"]


def test_a_job_for_another_models_geometry_is_refused_before_sampling():
    ex = FunctionExecutor(framewise)  # makes 4n+1 latents
    with pytest.raises(
        ValueError, match=r"executor's model makes a \(3, 4, 4\).*'ltx'.*\(2, 4, 4\)"
    ):
        sample_latents(ex, job(geometry=LTX, frames=9))
    assert ex.calls == 0
