"""Wan 2.1 and 2.2 checkpoints through the contract equal WanPipeline on the same inputs."""

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

# family -> (latent shape [C, T, H, W], pixel frames, height, width, steps)
CASES = {
    "wan21": ((16, 3, 2, 2), 9, 16, 16, 4),
    "wan22_a14b": ((16, 3, 2, 2), 9, 16, 16, 6),
    "wan22_ti2v": ((48, 3, 2, 2), 9, 32, 32, 3),
}


def _pipeline(pipe, x, frames, height, width, steps, output_type):
    return pipe(
        prompt=PROMPT,
        negative_prompt=NEGATIVE,
        height=height,
        width=width,
        num_frames=frames,
        num_inference_steps=steps,
        guidance_scale=GUIDANCE,
        latents=x.clone(),
        output_type=output_type,
    ).frames


@pytest.fixture(scope="module", params=list(CASES))
def run(request, checkpoint, loaded):
    """(model, contract latents, pipeline latents, pipeline video) for one Wan checkpoint."""
    name = request.param
    pipe, _ = checkpoint(name)
    m = loaded(name)
    shape, frames, height, width, steps = CASES[name]
    x = torch.randn(1, *shape, generator=torch.Generator().manual_seed(0))
    ours = contract_euler(m, x, m.timesteps(steps))
    theirs = _pipeline(pipe, x, frames, height, width, steps, "latent")
    assert torch.equal(m.timesteps(steps), pipe.scheduler.sigmas.float())
    video = _pipeline(pipe, x, frames, height, width, steps, "pt")
    return m, ours, theirs, video


def test_guided_euler_equals_the_pipeline(run):
    m, ours, theirs, _ = run
    error = float((ours - theirs).abs().max())
    print(f"{m.config.name}: guided Euler max error {error:.2e}")
    assert error < 1e-4


def test_decode_equals_the_pipeline_within_one_level(run):
    m, ours, _, video = run
    decoded = m.decode(ours)
    assert decoded.dtype == torch.uint8 and decoded.shape == pixels(video).shape
    assert level_error(decoded, pixels(video)) <= 1


def test_the_contract_states_the_checkpoint_facts(loaded):
    m = loaded("wan21")
    assert (m.latent_channels, m.vae_stride) == (16, (4, 8, 8))
    assert m.latent_shape(81, 480, 832) == (16, 21, 60, 104)
    assert m.geometry.frame_rule == "4n+1" and m.geometry.pixel_multiple == 16
    assert (m.default_shift, m.default_steps, m.default_guidance) == (3.0, 50, 5.0)
    assert m.config.name.startswith("diffusers:") and len(m.weights_digest()) == 64
    ti2v = loaded("wan22_ti2v")
    assert ti2v.vae_stride == (4, 16, 16) and ti2v.geometry.pixel_multiple == 32


def test_prompts_are_always_padded_to_512_tokens(loaded):
    """Wan's cross-attention has no mask: short and long prompts are both 512 rows."""
    m = loaded("wan21")
    short, long = m.encode_text(["a"]), m.encode_text(["дом " * 300])
    assert short.emb.shape[1] == long.emb.shape[1] == 512
    assert bool(short.mask.all()) and bool(long.mask.all())
    assert float(short.emb[0, 10:].abs().max()) == 0.0  # past the prompt: zeros, as Wan pads


def test_a_batch_with_mixed_t_is_split_by_expert(loaded):
    m = loaded("wan22_a14b")
    assert m.boundary_timestep == pytest.approx(875.0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(2, 16, 3, 2, 2, generator=gen)
    cond = m.encode_text(["a", "b"])
    t = torch.tensor([0.95, 0.3])
    both = m.velocity(x, t, cond)
    for i in range(2):
        alone = m.velocity(x[i : i + 1], t[i : i + 1], cond[i])
        assert torch.allclose(both[i], alone[0], atol=1e-5)
    # each expert answers for its side of the boundary
    high = m.pipe.transformer(
        hidden_states=x[:1],
        timestep=torch.tensor([950.0]),
        encoder_hidden_states=cond.emb[:1],
        return_dict=False,
    )[0]
    assert torch.allclose(both[0], high[0], atol=1e-5)


def test_chunked_decode_equals_a_full_decode(loaded):
    """Wan's VAE is causal: with the measured context before a chunk, chunks are exact."""
    m = loaded("wan21")
    before, after = m.decode_context
    assert after == 0 and before >= 1
    z = torch.randn(1, 16, 9, 2, 2, generator=torch.Generator().manual_seed(2))
    full = m.decode(z)
    chunks = [m.decode_chunk(z, a, b) for a, b in [(0, 2), (2, 5), (5, 9)]]
    assert level_error(torch.cat(chunks, dim=1), full) == 0


def test_encode_gives_latents_of_the_stated_shape(loaded):
    m = loaded("wan21")
    video = torch.randint(0, 256, (1, 9, 16, 32, 3), dtype=torch.uint8)
    z = m.encode(video)
    assert z.shape == (1, *m.latent_shape(9, 16, 32)[:1], 3, 2, 4)
    with pytest.raises(ValueError, match="4n\\+1"):
        m.encode(video[:, :8])
