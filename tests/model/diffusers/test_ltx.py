"""LTX-Video through the contract equals LTXPipeline; its non-causal decoder chunks exactly."""

from __future__ import annotations

import pytest
import torch

from model.diffusers.testing import (
    GUIDANCE,
    NEGATIVE,
    PROMPT,
    contract_euler,
    level_error,
    pixels,
)

FRAMES, HEIGHT, WIDTH, STEPS = 17, 64, 64, 4  # latent (8, 3, 2, 2)


@pytest.fixture(scope="module")
def run(checkpoint, loaded):
    """(model, pipeline, contract latents, pipeline latents, pipeline video)."""
    pipe, _ = checkpoint("ltx")
    m = loaded("ltx")
    x = torch.randn(
        1, *m.latent_shape(FRAMES, HEIGHT, WIDTH), generator=torch.Generator().manual_seed(0)
    )
    ts = m.timesteps(STEPS, FRAMES, HEIGHT, WIDTH)
    ours = contract_euler(m, x, ts)

    def pipeline(output_type):
        return pipe(
            prompt=PROMPT, negative_prompt=NEGATIVE, height=HEIGHT, width=WIDTH,
            num_frames=FRAMES, num_inference_steps=STEPS, guidance_scale=GUIDANCE,
            latents=pipe._pack_latents(x, 1, 1), output_type=output_type,
        ).frames  # fmt: skip

    theirs = pipe._unpack_latents(pipeline("latent"), *x.shape[2:], 1, 1)
    assert torch.equal(ts, pipe.scheduler.sigmas.float())
    return m, ours, theirs, pipeline("pt")


def test_guided_euler_equals_the_pipeline(run):
    _, ours, theirs, _ = run
    error = float((ours - theirs).abs().max())
    print(f"ltx: guided Euler max error {error:.2e}")
    assert error < 1e-4


def test_decode_equals_the_pipeline_within_one_level(run):
    m, ours, _, video = run
    assert level_error(m.decode(ours), pixels(video)) <= 1


def test_the_contract_states_ltx_facts(loaded):
    m = loaded("ltx")
    assert m.geometry.frame_rule == "8n+1" and m.geometry.pixel_multiple == 32
    assert m.vae_stride == (8, 32, 32)
    assert m.latent_shape(161, 512, 704) == (8, 21, 16, 22)
    assert (m.default_steps, m.default_guidance, m.frame_rate) == (50, 3.0, 25.0)
    # the shift grows with the token count, as the pipeline's mu does
    assert m.shift_for(17, 64, 64) < m.shift_for(161, 512, 704)
    cond = m.encode_text(["a", "a much longer prompt"])
    assert cond.emb.shape[1] == 128 and cond.mask.sum(1).tolist()[0] < cond.mask.sum(1).tolist()[1]


def test_chunked_decode_stays_within_the_stated_bound(loaded):
    """With the measured context on both sides, chunks equal the full decode to rounding.

    Measured: 2.6e-6 at most in [-1, 1] (convolutions over a shorter clip round
    differently), so at most 1 uint8 level where a value sits on a level boundary.

    With one latent frame of context instead, the seams differ: the context is needed.
    """
    m = loaded("ltx")
    before, after = m.decode_context
    assert before >= 2 and after >= 1  # not causal: context after a chunk too
    z = torch.randn(1, 8, 2 * before + 6, 2, 2, generator=torch.Generator().manual_seed(2))
    T = z.shape[2]
    bounds = [(0, 3), (3, T // 2), (T // 2, T)]
    full = m.decode(z)
    chunked = torch.cat([m.decode_chunk(z, a, b) for a, b in bounds], dim=1)
    raw_full = m._decode(z)
    s = m.geometry.temporal_stride
    float_error = max(
        float(
            (
                m.decode_chunk_float(z, a, b)
                - raw_full[:, :, max(0, s * (a - 1) + 1) : s * (b - 1) + 1]
            )
            .abs()
            .max()
        )
        for a, b in bounds
    )
    print(f"ltx: chunked decode {level_error(chunked, full)} levels, {float_error:.1e} in [-1, 1]")
    assert level_error(chunked, full) <= 1 and float_error < 1e-5
    m._decode_context, saved = (1, 1), m._decode_context
    try:
        short = torch.cat([m.decode_chunk(z, a, b) for a, b in bounds], dim=1)
    finally:
        m._decode_context = saved
    assert level_error(short, full) > 0
