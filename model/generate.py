"""Text-to-video in one process: noise → guided flow-matching sampling → decode.

This is the unwindowed reference path (one forward covers the whole video). The farm's
window engine produces the same result for short videos and scales past one forward.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from model.sampling import cfg, euler, flow_timesteps, heun
from model.video import VideoModel

SAMPLERS = {"euler": euler, "heun": heun}


def noise(shape: tuple[int, ...], seed: int) -> Tensor:
    """Standard normal noise drawn on the CPU from its own generator.

    The same seed gives the same tensor on every device and every executor layout: move
    it to the model's device after drawing, never draw there.
    """
    generator = torch.Generator(device="cpu").manual_seed(int(seed))
    return torch.randn(tuple(shape), generator=generator, dtype=torch.float32)


@torch.no_grad()
def generate_latents(
    m: VideoModel,
    prompt: str,
    *,
    negative_prompt: str = "",
    frames: int = 17,
    height: int = 144,
    width: int = 256,
    steps: int = 20,
    guidance: float = 4.0,
    seed: int = 0,
    sampler: str = "euler",
    shift: float | None = None,
    callback: Callable[[int, Tensor, Tensor], None] | None = None,
) -> Tensor:
    """Sample the latent video [1, C, T, H/8, W/8] for a prompt (CFG with a negative prompt)."""
    if sampler not in SAMPLERS:
        raise ValueError(f"sampler must be one of {sorted(SAMPLERS)}, got {sampler!r}")
    if guidance < 1:
        raise ValueError(f"guidance must be >= 1 (1 = no guidance), got {guidance}")
    shape = (1, *m.latent_shape(frames, height, width))
    x = noise(shape, seed).to(device=m.device, dtype=m.dtype)
    cond = m.encode_text([prompt, negative_prompt])
    velocity = cfg(m.velocity, cond[0], cond[1], guidance)
    timesteps = flow_timesteps(steps, shift if shift is not None else m.config.shift)
    return SAMPLERS[sampler](velocity, x, timesteps.to(m.device), callback=callback)


def generate(m: VideoModel, prompt: str, **kwargs) -> Tensor:
    """Render a prompt to uint8 frames [F, H, W, 3] (keyword arguments as generate_latents)."""
    return m.decode(generate_latents(m, prompt, **kwargs))[0]
