"""Analytic parameter and FLOP counts, the numbers a GPU run compares to peak (MFU).

FLOPs count a multiply-add as 2. Only matmuls and attention are counted (norms, rotary
and activations are < 1% at these sizes), which is the convention of MFU reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from model.config import ModelConfig


def count_params(module: torch.nn.Module) -> int:
    """Number of parameters (works on the `meta` device: nothing is allocated)."""
    return sum(p.numel() for p in module.parameters())


@dataclass(frozen=True)
class StepFlops:
    """Forward FLOPs of one denoising step of the transformer, by part."""

    tokens: int
    text_tokens: int
    linear: int  # projections and MLPs
    self_attention: int  # QKᵀ and AV over spacetime tokens
    cross_attention: int  # QKᵀ and AV against the prompt

    @property
    def total(self) -> int:
        return self.linear + self.self_attention + self.cross_attention


def dit_step_flops(
    config: ModelConfig, frames: int, height: int, width: int, text_tokens: int | None = None
) -> StepFlops:
    """FLOPs of one transformer forward on one video (one CFG branch)."""
    T = (frames - 1) // config.vae_stride[0] + 1
    H, W = height // config.pixel_multiple, width // config.pixel_multiple
    L = T * H * W
    Lt = text_tokens if text_tokens is not None else config.text_max_len
    D, F = config.dim, config.ffn_dim
    patch_dim = config.latent_channels * config.patch_size[1] * config.patch_size[2]
    per_block = (
        2 * L * D * 3 * D  # qkv
        + 2 * L * D * D  # self-attn out
        + 2 * L * D * D  # cross q
        + 2 * Lt * D * 2 * D  # cross kv
        + 2 * L * D * D  # cross out
        + 2 * 2 * L * D * F  # MLP
    )
    linear = config.depth * per_block + 2 * L * patch_dim * D * 2  # + patch embed and head
    self_attn = config.depth * 2 * 2 * L * L * D
    cross_attn = config.depth * 2 * 2 * L * Lt * D
    return StepFlops(L, Lt, linear, self_attn, cross_attn)
