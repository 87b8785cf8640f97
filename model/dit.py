"""Diffusion transformer over spacetime patches (Wan / DiT style).

A latent video [C, T, H, W] becomes T·(H/2)·(W/2) tokens (patch (1, 2, 2)); tokens carry
3D rotary positions (t, h, w), so any length and aspect ratio works, plus (config `abs_pos`)
an absolute embedding of where the token sits in its clip, in fractions of the clip, so
the model can place "starts on the right, ends on the left" from pure noise. Each block does
self-attention with QK-norm, cross-attention to the prompt, and an MLP; the timestep and
the pooled prompt (its mean token, as SD3 / PixArt add a pooled text vector) modulate the
blocks through adaLN-Zero (shift, scale, gate) computed in float32. The pooled path carries
clip-wide attributes (colour, motion) from the first steps of training, before
cross-attention has learnt where to look.

Two layouts share every layer:
- batched: B clips of one shape → tokens [B, L, D]; text padding via a key mask.
- packed: N clips of different shapes → tokens [1, ΣL_i, D] with a block-diagonal mask,
  so a Renderer batches 9:16, 1:1 and 16:9 windows into one forward with no padding.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
from torch import Tensor

from model.attention import attention
from model.config import ModelConfig
from model.text import RMSNorm, TextCond


@dataclass
class Layout:
    """How tokens are arranged: one grid per clip, and whether clips are packed."""

    grids: list[tuple[int, int, int]]  # (T, H/2, W/2) token grid of each clip
    packed: bool
    text_seqlens: list[int] | None = None  # real text tokens per clip (packed only)

    @property
    def distinct_grids(self) -> list[tuple[int, int, int]]:
        """Grids whose per-token tables are built: every clip's if packed, else the one shared."""
        return self.grids if self.packed else self.grids[:1]

    @property
    def seqlens(self) -> list[int]:
        return [t * h * w for t, h, w in self.grids]

    def attn_kwargs(self, text_mask: Tensor | None = None) -> tuple[dict, dict]:
        """Keyword arguments of `attention` for self- and cross-attention."""
        if self.packed:
            return (
                {"q_seqlens": self.seqlens, "kv_seqlens": self.seqlens},
                {"q_seqlens": self.seqlens, "kv_seqlens": self.text_seqlens},
            )
        return {}, {"kv_mask": text_mask}

    def affine(self, h: Tensor, mul: Tensor, add: Tensor | None = None) -> Tensor:
        """h * mul + add with per-clip mul/add [N, D], without per-token copies of them."""
        if not self.packed:
            mul = mul[:, None]  # (B, 1, D)
            return h * mul if add is None else torch.addcmul(add[:, None], h, mul)
        out = torch.empty_like(h)  # (1, ΣL, D)
        start = 0
        for i, n in enumerate(self.seqlens):
            seg, dst = h[:, start : start + n], out[:, start : start + n]
            if add is None:
                torch.mul(seg, mul[i], out=dst)
            else:
                torch.addcmul(add[i], seg, mul[i], out=dst)
            start += n
        return out


def timestep_embedding(t: Tensor, dim: int, max_period: float = 10000.0) -> Tensor:
    """Sinusoidal embedding [N, dim] of t in [0, 1] (scaled to [0, 1000] as in DiT/Wan)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t.device) / half)
    args = 1000.0 * t.float()[:, None] * freqs[None]  # (N, half)
    return torch.cat([args.cos(), args.sin()], dim=-1)


def rope_tables(layout: Layout, head_dim: int, theta: float, device) -> tuple[Tensor, Tensor]:
    """cos/sin tables [L, head_dim/2] of 3D rotary positions for every token of the layout.

    The head dim is split into a time part and two equal spatial parts (as Wan does), so
    positions along t, h and w rotate disjoint channel pairs.
    """
    d_hw = 2 * (head_dim // 6)
    dims = (head_dim - 2 * d_hw, d_hw, d_hw)
    inv = [1.0 / theta ** (torch.arange(0, d, 2, device=device).float() / d) for d in dims]
    cos, sin = [], []
    for T, H, W in layout.distinct_grids:
        pos = torch.stack(
            torch.meshgrid(
                torch.arange(T, device=device),
                torch.arange(H, device=device),
                torch.arange(W, device=device),
                indexing="ij",
            ),
            dim=-1,
        ).reshape(-1, 3)  # (T*H*W, 3)
        ang = torch.cat([pos[:, i, None].float() * inv[i][None] for i in range(3)], dim=-1)
        cos.append(ang.cos())
        sin.append(ang.sin())
    return torch.cat(cos), torch.cat(sin)  # (L, head_dim/2)


def abs_pos_features(grid: tuple[int, int, int], freqs: int, device) -> Tensor:
    """Sin/cos features [T*H*W, 6*freqs] of each token's place in its clip, in fractions.

    Time runs from 0 (first latent frame) to 1 (last); y and x from -1 to 1 across the
    frame, so the same features describe any length, resolution and aspect ratio. Rotary
    positions are relative, so without these a token cannot tell where in the frame or
    the clip it is, and from pure noise a model cannot put "moves left" (starts on the
    right, ends on the left) anywhere but everywhere. Under the window engine a clip is
    one window, so each window's time runs from 0 to 1, as a training clip's does.
    """
    T, H, W = grid
    axes = [
        torch.linspace(0.0, 1.0, T, device=device) if T > 1 else torch.zeros(1, device=device),
        (torch.arange(H, device=device) + 0.5) / H * 2 - 1,
        (torch.arange(W, device=device) + 0.5) / W * 2 - 1,
    ]
    pos = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (L, 3)
    ang = pos[:, :, None] * (math.pi / 2 * 2.0 ** torch.arange(freqs, device=device))  # (L,3,F)
    return torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(1)  # (L, 6F)


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate channel pairs of x [B, L, H, D] by the position angles (float32)."""
    xf = x.float().unflatten(-1, (-1, 2))  # (B, L, H, D/2, 2)
    x0, x1 = xf.unbind(-1)
    c, s = cos[None, :, None], sin[None, :, None]  # (1, L, 1, D/2)
    out = torch.stack([x0 * c - x1 * s, x0 * s + x1 * c], dim=-1)
    return out.flatten(-2).type_as(x)


class SelfAttention(nn.Module):
    """Spacetime self-attention with QK-norm and 3D rotary positions."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads = config.heads
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        qk = config.qk_norm
        self.q_norm = RMSNorm(config.head_dim, config.eps) if qk else nn.Identity()
        self.k_norm = RMSNorm(config.head_dim, config.eps) if qk else nn.Identity()

    def forward(self, x: Tensor, rope: tuple[Tensor, Tensor], attn_kwargs: dict) -> Tensor:
        B, L, D = x.shape
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).unbind(2)  # (B,L,H,Dh)
        q, k = apply_rope(self.q_norm(q), *rope), apply_rope(self.k_norm(k), *rope)
        return self.proj(attention(q, k, v, **attn_kwargs).reshape(B, L, D))


class CrossAttention(nn.Module):
    """Attention from video tokens to the prompt's tokens."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.heads = config.heads
        self.q = nn.Linear(config.dim, config.dim)
        self.kv = nn.Linear(config.dim, 2 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)
        qk = config.qk_norm
        self.q_norm = RMSNorm(config.head_dim, config.eps) if qk else nn.Identity()
        self.k_norm = RMSNorm(config.head_dim, config.eps) if qk else nn.Identity()

    def forward(self, x: Tensor, text: Tensor, attn_kwargs: dict) -> Tensor:
        B, L, D = x.shape
        Lt = text.shape[1]
        q = self.q_norm(self.q(x).view(B, L, self.heads, -1))  # (B, L, H, Dh)
        k, v = self.kv(text).view(B, Lt, 2, self.heads, -1).unbind(2)  # (B, Lt, H, Dh)
        return self.proj(attention(q, self.k_norm(k), v, **attn_kwargs).reshape(B, L, D))


class Block(nn.Module):
    """Transformer block: modulated self-attention, cross-attention, modulated MLP."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        D = config.dim
        self.norm1 = nn.LayerNorm(D, eps=config.eps, elementwise_affine=False)
        self.attn = SelfAttention(config)
        self.norm_cross = nn.LayerNorm(D, eps=config.eps)
        self.cross = CrossAttention(config)
        self.norm2 = nn.LayerNorm(D, eps=config.eps, elementwise_affine=False)
        self.mlp = nn.Sequential(
            nn.Linear(D, config.ffn_dim), nn.GELU("tanh"), nn.Linear(config.ffn_dim, D)
        )
        # Per-block offset added to the shared timestep modulation (as in Wan).
        self.modulation = nn.Parameter(torch.zeros(6, D))

    def forward(
        self, x: Tensor, mod: Tensor, text: Tensor, rope, layout: Layout, self_kw, cross_kw
    ) -> Tensor:
        # mod: (N, 6, D) float32 per clip; norms and modulation in float32, cast back.
        shift1, scale1, gate1, shift2, scale2, gate2 = (mod + self.modulation.float()).unbind(1)
        h = layout.affine(self.norm1(x.float()), 1 + scale1, shift1)
        x = x + layout.affine(self.attn(h.type_as(x), rope, self_kw).float(), gate1).type_as(x)
        x = x + self.cross(self.norm_cross(x.float()).type_as(x), text, cross_kw)
        h = layout.affine(self.norm2(x.float()), 1 + scale2, shift2)
        return x + layout.affine(self.mlp(h.type_as(x)).float(), gate2).type_as(x)


class DiT(nn.Module):
    """Predicts the flow-matching velocity of a latent video given t and the prompt."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        C, D = config.latent_channels, config.dim
        self.patch = config.patch_size
        patch_dim = C * math.prod(self.patch)
        self.patch_embed = nn.Linear(patch_dim, D)
        self.pos_embed = nn.Linear(6 * config.abs_pos, D) if config.abs_pos else None
        self.text_embed = nn.Sequential(
            nn.Linear(config.text_dim, D), nn.GELU("tanh"), nn.Linear(D, D)
        )
        self.time_embed = nn.Sequential(nn.Linear(config.freq_dim, D), nn.SiLU(), nn.Linear(D, D))
        self.text_pool = nn.Sequential(
            nn.Linear(config.text_dim, D), nn.SiLU(), nn.Linear(D, D)
        )  # pooled prompt, added to the timestep embedding
        self.time_proj = nn.Sequential(nn.SiLU(), nn.Linear(D, 6 * D))  # shared by all blocks
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm_out = nn.LayerNorm(D, eps=config.eps, elementwise_affine=False)
        self.head_modulation = nn.Parameter(torch.zeros(2, D))
        self.head = nn.Linear(D, patch_dim)

    def init_weights(self, zero_init: bool = True) -> None:
        """Initialise every weight; `zero_init` gives adaLN-Zero for training.

        Linear layers get xavier-uniform weights and zero biases; the timestep MLP and the
        pooled-prompt MLP get a small normal init (as DiT). With `zero_init`, the shared
        modulation projection and the output head are zeroed, so every gate is 0: each
        block starts as the identity on its residual path and the fresh model predicts
        zero velocity. Without it (an
        untrained model for plumbing tests) those layers get small random weights too, so
        the output depends on every input.
        """
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        for layer in (*self.time_embed[::2], *self.text_pool[::2]):
            nn.init.normal_(layer.weight, std=0.02)
        for layer in (self.time_proj[1], self.head):
            if zero_init:
                nn.init.zeros_(layer.weight)
            else:
                nn.init.normal_(layer.weight, std=0.02 if layer is self.head else 0.2)
            nn.init.zeros_(layer.bias)

    # --- layouts ---------------------------------------------------------------------
    def _patchify(self, x: Tensor) -> Tensor:
        B, C, T, H, W = x.shape
        pt, ph, pw = self.patch
        x = x.view(B, C, T // pt, pt, H // ph, ph, W // pw, pw)  # (B,C,t,pt,h,ph,w,pw)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, t, h, w, C, pt, ph, pw)
        return x.reshape(B, -1, C * pt * ph * pw)  # (B, t*h*w, patch_dim)

    def _unpatchify(self, tokens: Tensor, grid: tuple[int, int, int]) -> Tensor:
        B = tokens.shape[0]
        t, h, w = grid
        pt, ph, pw = self.patch
        x = tokens.view(B, t, h, w, -1, pt, ph, pw)  # (B, t, h, w, C, pt, ph, pw)
        x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, C, t, pt, h, ph, w, pw)
        return x.reshape(B, -1, t * pt, h * ph, w * pw)  # (B, C, T, H, W)

    def _grid(self, shape: torch.Size) -> tuple[int, int, int]:
        T, H, W = shape[-3:]
        pt, ph, pw = self.patch
        return (T // pt, H // ph, W // pw)

    # --- forward ---------------------------------------------------------------------
    def _run(
        self, tokens: Tensor, t: Tensor, text: Tensor, text_mask, pooled: Tensor, layout: Layout
    ) -> Tensor:
        D = self.config.dim
        x = self.patch_embed(tokens)  # (B, L, D)
        if self.pos_embed is not None:
            feats = torch.cat(
                [abs_pos_features(g, self.config.abs_pos, x.device) for g in layout.distinct_grids]
            )
            x = x + self.pos_embed(feats.to(x.dtype))[None]  # (1, L, D)
        temb = self.time_embed(timestep_embedding(t, self.config.freq_dim).to(x.dtype))  # (N, D)
        temb = temb + self.text_pool(pooled.to(x.dtype))
        mod = self.time_proj(temb).float().view(-1, 6, D)  # (N, 6, D)
        text = self.text_embed(text)  # (B, Lt, D)
        rope = rope_tables(layout, self.config.head_dim, self.config.rope_theta, x.device)
        self_kw, cross_kw = layout.attn_kwargs(text_mask)
        for block in self.blocks:
            x = block(x, mod, text, rope, layout, self_kw, cross_kw)
        shift, scale = (temb.float()[:, None] + self.head_modulation.float()).unbind(1)  # (N, D)
        x = layout.affine(self.norm_out(x.float()), 1 + scale, shift)
        return self.head(x.type_as(tokens))  # (B, L, patch_dim)

    def forward(self, x: Tensor, t: Tensor, cond: TextCond) -> Tensor:
        """Velocity for a batch of same-shape latents x [B, C, T, H, W] at times t [B]."""
        grid = self._grid(x.shape)
        layout = Layout([grid] * x.shape[0], packed=False)
        out = self._run(
            self._patchify(x), t, cond.emb.to(x.dtype), cond.mask, cond.pooled(), layout
        )
        return self._unpatchify(out, grid).type_as(x)

    def forward_packed(self, xs: list[Tensor], t: Tensor, cond: TextCond) -> list[Tensor]:
        """Velocity for clips of different shapes [C, T_i, H_i, W_i], packed in one forward."""
        grids = [self._grid(x.shape) for x in xs]
        tokens = torch.cat([self._patchify(x[None]) for x in xs], dim=1)  # (1, ΣL, patch_dim)
        text, text_seqlens = cond.packed()
        layout = Layout(grids, packed=True, text_seqlens=text_seqlens)
        out = self._run(tokens, t, text.to(tokens.dtype), None, cond.pooled(), layout)
        parts = out.split(layout.seqlens, dim=1)
        return [
            self._unpatchify(p, g)[0].type_as(x) for p, g, x in zip(parts, grids, xs, strict=True)
        ]
