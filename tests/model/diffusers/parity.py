"""Helpers that run the contract and the diffusers pipeline on the same latents and sigmas."""

from __future__ import annotations

import torch
from torch import Tensor

from model.sampling import cfg, euler

PROMPT, NEGATIVE, GUIDANCE = "a red bottle on a beach", "", 5.0


def contract_euler(m, x: Tensor, ts: Tensor, guidance: float = GUIDANCE) -> Tensor:
    """Guided Euler through the model contract: encode_text, velocity, model.sampling."""
    cond, uncond = m.encode_text([PROMPT]), m.encode_text([NEGATIVE])
    return euler(cfg(m.velocity, cond, uncond, guidance), x.clone(), ts)


def pixels(frames: Tensor) -> Tensor:
    """A pipeline's output_type="pt" video [B, F, 3, H, W] in [0, 1] as uint8 [B, F, H, W, 3]."""
    return (frames.float() * 255).round().to(torch.uint8).permute(0, 1, 3, 4, 2)


def level_error(a: Tensor, b: Tensor) -> int:
    """Largest difference between two uint8 videos, in levels."""
    return int((a.int() - b.int()).abs().max())
