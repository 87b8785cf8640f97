"""Text-video alignment: teach the text encoder what captions say before the DiT reads it.

A byte-level encoder trained from scratch only through the flow-matching loss learns the
prompt very slowly: the loss barely depends on the prompt except near pure noise, so the
gradient that reaches the encoder is small and noisy, and a CPU budget ends before colour
words mean anything (the first shipped `small` model followed its prompt at chance).
Real video models start from a pretrained text encoder (CLIP, T5, umT5). This is the
same idea at the farm's scale: a CLIP-style contrastive phase on the latent bank, where
the pooled caption embedding (`TextCond.pooled`, what the DiT's adaLN path reads) must
pick out its own clip's latent among the batch. Captions come in every language, so the
six ways of writing "red" land on the same direction.

`LatentProbe` is the video side: a small 3D conv net over a latent clip. It is only used
here and is not shipped.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor


class LatentProbe(nn.Module):
    """Embeds a latent clip [B, C, T, H, W] into [B, dim] (position and time are kept)."""

    def __init__(self, channels: int, frames: int, height: int, width: int, dim: int):
        super().__init__()
        self.convs = nn.Sequential(
            nn.Conv3d(channels, 48, 3, padding=1),
            nn.SiLU(),
            nn.Conv3d(48, 48, (3, 2, 2), stride=(1, 2, 2), padding=(1, 0, 0)),
            nn.SiLU(),
        )
        flat = 48 * frames * (height // 2) * (width // 2)
        self.head = nn.Sequential(nn.Linear(flat, 256), nn.SiLU(), nn.Linear(256, dim))

    def forward(self, z: Tensor) -> Tensor:
        return self.head(self.convs(z).flatten(1))


class Aligner(nn.Module):
    """The contrastive pair: a projection of pooled text and a latent probe, one temperature."""

    def __init__(self, text_dim: int, latent_shape: tuple[int, int, int, int], dim: int = 128):
        super().__init__()
        self.text_proj = nn.Linear(text_dim, dim)
        self.probe = LatentProbe(*latent_shape, dim)
        self.log_scale = nn.Parameter(torch.tensor(2.66))  # exp(2.66) ≈ 1/0.07, as CLIP

    def loss(self, pooled_text: Tensor, latents: Tensor, same: Tensor) -> tuple[Tensor, float]:
        """Symmetric InfoNCE; `same` [B, B] marks pairs with identical captioned content.

        Clips that share every captioned attribute are not negatives of each other: their
        logits are masked out (except the diagonal), so the loss never pushes apart two
        captions that mean the same. Returns (loss, top-1 text→video accuracy).
        """
        a = F.normalize(self.text_proj(pooled_text), dim=-1)
        b = F.normalize(self.probe(latents), dim=-1)
        logits = self.log_scale.exp().clamp(max=100) * a @ b.T  # (B, B)
        eye = torch.eye(len(a), dtype=torch.bool, device=a.device)
        logits = logits.masked_fill(same & ~eye, float("-inf"))
        target = torch.arange(len(a), device=a.device)
        loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target))
        acc = (logits.argmax(dim=1) == target).float().mean().item()
        return loss, acc
