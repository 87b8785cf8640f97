"""CogVideoX's v-prediction as a flow: exact against CogVideoXPipeline's DDIM steps."""

from __future__ import annotations

import pytest
import torch

from model.diffusers.cogvideox import flow_time
from model.diffusers.testing import (
    GUIDANCE,
    NEGATIVE,
    PROMPT,
    contract_euler,
    level_error,
    pixels,
)

FRAMES, SIZE, STEPS = 9, 16, 4  # latent (4, 3, 2, 2); 4 steps divide the 1000 training steps


@pytest.fixture(scope="module")
def run(checkpoint, loaded):
    """(model, contract latents, pipeline latents [B, C, T, H, W], pipeline video)."""
    pipe, _ = checkpoint("cogvideox")
    m = loaded("cogvideox")
    x_T = torch.randn(1, 3, 4, 2, 2, generator=torch.Generator().manual_seed(0))  # (B, T, C, H, W)

    def pipeline(output_type):
        return pipe(
            prompt=PROMPT, negative_prompt=NEGATIVE, height=SIZE, width=SIZE, num_frames=FRAMES,
            num_inference_steps=STEPS, guidance_scale=GUIDANCE, latents=x_T.clone(),
            output_type=output_type,
        ).frames  # fmt: skip

    ts = m.timesteps(STEPS)
    t0 = ts[0].double()
    y = (x_T.permute(0, 2, 1, 3, 4).double() * torch.sqrt(t0**2 + (1 - t0) ** 2)).float()
    ours = contract_euler(m, y, ts)  # y = x / (a + s) at the first step
    theirs = pipeline("latent").permute(0, 2, 1, 3, 4)
    return m, ours, theirs, pipeline("pt")


def test_guided_euler_equals_the_pipelines_ddim(run):
    _, ours, theirs, _ = run
    error = float((ours - theirs).abs().max())
    print(f"cogvideox: guided Euler max error {error:.2e}")
    assert error < 1e-4


def test_decode_equals_the_pipeline_within_one_level(run):
    m, ours, _, video = run
    assert level_error(m.decode(ours), pixels(video)) <= 1


def test_an_exact_v_prediction_gives_the_flow_velocity(loaded, monkeypatch):
    """If the transformer predicted v = a·ε − s·x0 exactly, velocity returns ε − x0."""
    m = loaded("cogvideox")
    alphas = m.pipe.scheduler.alphas_cumprod.double()
    gen = torch.Generator().manual_seed(3)
    x0, eps = torch.randn(2, 4, 3, 2, 2, generator=gen), torch.randn(2, 4, 3, 2, 2, generator=gen)
    taus = torch.tensor([900, 250])
    t = torch.tensor(flow_time(alphas[taus].numpy()), dtype=torch.float32)

    def exact_v(hidden_states, timestep, **kwargs):
        ac = alphas[timestep.round().long()].view(-1, 1, 1, 1, 1)
        a, s = ac.sqrt(), (1 - ac).sqrt()
        x = hidden_states.permute(0, 2, 1, 3, 4).double()  # (B, C, T, H, W)
        assert torch.allclose(x, a * x0 + s * eps, atol=1e-5)  # fed x_τ, not y
        return ((a * eps - s * x0).permute(0, 2, 1, 3, 4).float(),)

    monkeypatch.setattr(m.pipe, "transformer", _Stub(m.pipe.transformer.config, exact_v))
    y = (1 - t.view(-1, 1, 1, 1, 1)) * x0 + t.view(-1, 1, 1, 1, 1) * eps
    v = m.velocity(y, t, m.encode_text(["a", "b"]))
    assert torch.allclose(v, eps - x0, atol=1e-4)


class _Stub:
    """A transformer stand-in with a config and a chosen forward."""

    def __init__(self, config, forward):
        self.config, self._forward = config, forward

    def __call__(self, **kwargs):
        return self._forward(**kwargs)


def test_the_contract_states_cogvideox_facts(loaded):
    m = loaded("cogvideox")
    assert m.geometry.pixel_multiple == 16
    assert m.decode_context is None  # group norms over frames: chunks come from a full decode
    ts = m.timesteps(4)
    assert ts.shape == (5,) and float(ts[-1]) == 0.0 and bool((ts[1:] < ts[:-1]).all())
    assert m.geometry.frame_rule == "8n+1" and m.latent_shape(49, 480, 720)[1] == 13
    z = torch.randn(1, 4, 5, 2, 2, generator=torch.Generator().manual_seed(4))
    full = m.decode(z)
    assert full.shape[1] == 17
    chunks = [m.decode_chunk(z, a, b) for a, b in [(0, 1), (1, 3), (3, 5)]]
    assert level_error(torch.cat(chunks, dim=1), full) == 0
    with pytest.raises(ValueError, match="odd number of latent frames"):
        m.decode(z[:, :, :4])
