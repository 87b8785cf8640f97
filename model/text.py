"""Byte-level multilingual text encoder.

Prompts are read as UTF-8 bytes, so there is no vocabulary file and every script works
(zh, ja, ko, ar, he, th, hi, emoji). Token ids: 0 = padding, 1 = BOS, 2 + b for byte b.
Every prompt starts with BOS, so the empty prompt is a real one-token sequence: it is the
unconditional prompt that classifier-free guidance uses.

A byte alone means little: "roja" and "rosa" (es red, pink), "rouge" and "rose" share
most of their bytes. With `text_conv` set, a convolution over the byte embeddings gives
each byte its neighbours before the transformer, so words are formed in one step instead
of by attention layers (as the n-gram stems of byte/character models such as CANINE).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from model.attention import attention
from model.config import ModelConfig

PAD, BOS, BYTE_OFFSET = 0, 1, 2
VOCAB_SIZE = 256 + BYTE_OFFSET


@dataclass
class TextCond:
    """Encoded prompts: embeddings [B, L, D] and a padding mask [B, L] (True = real token)."""

    emb: Tensor
    mask: Tensor

    def __len__(self) -> int:
        return self.emb.shape[0]

    def __getitem__(self, index: int | slice | Tensor) -> TextCond:
        if isinstance(index, int):
            index = slice(index, index + 1)
        return TextCond(self.emb[index], self.mask[index])

    def to(self, device: torch.device | str | None = None, dtype: torch.dtype | None = None):
        """The same conditioning on another device / dtype (the mask stays bool)."""
        return TextCond(self.emb.to(device=device, dtype=dtype), self.mask.to(device=device))

    @staticmethod
    def cat(conds: list[TextCond]) -> TextCond:
        """Stack several conditionings into one batch, padding to the longest."""
        length = max(c.emb.shape[1] for c in conds)
        embs = [F.pad(c.emb, (0, 0, 0, length - c.emb.shape[1])) for c in conds]
        masks = [F.pad(c.mask, (0, length - c.mask.shape[1])) for c in conds]
        return TextCond(torch.cat(embs), torch.cat(masks))

    def pooled(self) -> Tensor:
        """Mean of each prompt's real token embeddings [B, D] (padding excluded)."""
        m = self.mask[..., None].to(self.emb.dtype)  # (B, L, 1)
        return (self.emb * m).sum(1) / m.sum(1).clamp_min(1)

    def packed(self) -> tuple[Tensor, list[int]]:
        """Real tokens of every prompt, concatenated: ([1, sum L_i, D], [L_i, ...])."""
        return self.emb[self.mask][None], self.mask.sum(dim=1).tolist()


def tokenize(prompts: list[str], max_len: int) -> tuple[Tensor, Tensor]:
    """Byte tokens [B, L] and mask [B, L]; over-long prompts are cut (with a warning)."""
    if isinstance(prompts, str):
        raise TypeError("prompts must be a list of strings, not a single string")
    rows: list[list[int]] = []
    for i, prompt in enumerate(prompts):
        if not isinstance(prompt, str):
            raise TypeError(f"prompts[{i}] must be a str, got {type(prompt).__name__}")
        data = prompt.encode("utf-8")
        if len(data) + 1 > max_len:
            # Cut at a character boundary so the last character is not half a code point.
            cut = data[: max_len - 1].decode("utf-8", errors="ignore").encode("utf-8")
            warnings.warn(
                f"prompts[{i}] is {len(data)} bytes; truncated to {len(cut)} "
                f"(text_max_len={max_len} tokens incl. BOS)",
                stacklevel=3,
            )
            data = cut
        rows.append([BOS, *(b + BYTE_OFFSET for b in data)])
    length = max((len(r) for r in rows), default=1)
    tokens = torch.full((len(rows), length), PAD, dtype=torch.long)
    for i, row in enumerate(rows):
        tokens[i, : len(row)] = torch.tensor(row)
    return tokens, tokens != PAD


class RMSNorm(nn.Module):
    """RMS norm over the last dim, computed in float32 and cast back."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        dims = (x.shape[-1],)
        return F.rms_norm(x.float(), dims, self.weight.float(), self.eps).type_as(x)


class TextBlock(nn.Module):
    """Pre-norm bidirectional transformer block with key-padding attention."""

    def __init__(self, dim: int, heads: int, eps: float):
        super().__init__()
        self.heads = heads
        self.norm1 = RMSNorm(dim, eps)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = RMSNorm(dim, eps)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU("tanh"), nn.Linear(4 * dim, dim))

    def forward(self, x: Tensor, mask: Tensor) -> Tensor:
        B, L, D = x.shape
        qkv = self.qkv(self.norm1(x)).view(B, L, 3, self.heads, D // self.heads)  # (B,L,3,H,Dh)
        q, k, v = qkv.unbind(dim=2)
        x = x + self.proj(attention(q, k, v, kv_mask=mask).reshape(B, L, D))
        return x + self.mlp(self.norm2(x))


class TextEncoder(nn.Module):
    """Bytes → contextual embeddings [B, L, text_dim] for cross-attention."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.max_len = config.text_max_len
        self.embed = nn.Embedding(VOCAB_SIZE, config.text_dim, padding_idx=PAD)
        self.pos = nn.Parameter(torch.zeros(config.text_max_len, config.text_dim))
        width = config.text_conv
        self.conv = (
            nn.Conv1d(config.text_dim, config.text_dim, width, padding=width // 2)
            if width
            else None
        )
        self.blocks = nn.ModuleList(
            TextBlock(config.text_dim, config.text_heads, config.eps)
            for _ in range(config.text_depth)
        )
        self.norm = RMSNorm(config.text_dim, config.eps)
        self._init_weights()

    def _init_weights(self) -> None:
        """Small normal init for embeddings, xavier for projections, zero biases."""
        nn.init.normal_(self.embed.weight, std=0.02)
        nn.init.normal_(self.pos, std=0.02)
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                nn.init.zeros_(module.bias)
        if self.conv is not None:  # small: each byte starts as itself, plus a little context
            nn.init.xavier_uniform_(self.conv.weight, gain=0.2)
            nn.init.zeros_(self.conv.bias)

    def embed_bytes(self, tokens: Tensor, mask: Tensor) -> Tensor:
        """Byte + position embeddings [B, L, D], mixed with their neighbours by `conv`."""
        x = self.embed(tokens) + self.pos[: tokens.shape[1]]  # (B, L, D)
        if self.conv is not None:
            # Padding is zeroed first, so a prompt's bytes see the same zeros past its end
            # whether it is encoded alone or beside a longer prompt.
            x = x + self.conv((x * mask[..., None]).transpose(1, 2)).transpose(1, 2)
        return x

    def forward(self, tokens: Tensor, mask: Tensor) -> TextCond:
        x = self.embed_bytes(tokens, mask)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x) * mask[..., None]  # padding rows are exactly zero
        return TextCond(x, mask)

    def encode(self, prompts: list[str]) -> TextCond:
        """Encode a list of prompts in any script."""
        device = self.embed.weight.device
        tokens, mask = tokenize(prompts, self.max_len)
        return self(tokens.to(device), mask.to(device))
