"""Input checks every model behind the contract runs: one wording of each rule, one place.

`VideoModel` and the diffusers adapters hold latents, times and prompt encodings to the
same rules and say so in the same words, so a caller's error reads the same whatever
model it runs.
"""

from __future__ import annotations

import torch
from torch import Tensor

from model.text import TextCond


def describe(x: object) -> str:
    """A value as an error message names it: a tensor's shape and dtype, else its type."""
    if isinstance(x, Tensor):
        return f"shape {tuple(x.shape)} {x.dtype}"
    return type(x).__name__


def check_latent(
    x: object,
    name: str,
    *,
    channels: int,
    patch: tuple[int, int],
    device: torch.device | None = None,
    batched: bool = True,
) -> None:
    """Raise a ValueError naming `name` unless x is a float latent [B,] C, T, H, W with
    `channels` channels, sides that are multiples of the token `patch`, on `device` if given."""
    dims = "[B, C, T, H, W]" if batched else "[C, T, H, W]"
    if not isinstance(x, Tensor) or x.ndim != (5 if batched else 4):
        raise ValueError(f"{name} must be a tensor of shape {dims}, got {describe(x)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be floating point, got {x.dtype}")
    if device is not None and x.device != device:
        raise ValueError(f"{name} is on {x.device} but the model is on {device}")
    C, _, H, W = x.shape[-4:]
    if channels != C:
        raise ValueError(f"{name} must have {channels} channels, got {C}")
    ph, pw = patch
    if H % ph or W % pw:
        raise ValueError(f"{name} latent height/width must be multiples of {ph}, got {H}x{W}")


def check_t(t: Tensor | float, batch: int, device: torch.device) -> Tensor:
    """Per-sample flow times [batch] in [0, 1] on `device` (a scalar is expanded)."""
    t = torch.as_tensor(t, dtype=torch.float32, device=device)
    if t.ndim == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"t must be a scalar or have shape [{batch}], got {tuple(t.shape)}")
    if bool((t < 0).any() or (t > 1).any()):
        raise ValueError("t must lie in [0, 1]")
    return t


def check_cond(cond: object, batch: int, device: torch.device, dtype: torch.dtype) -> TextCond:
    """The prompt encodings for a batch of `batch` (one is broadcast), on device and dtype."""
    if not isinstance(cond, TextCond):
        raise ValueError(f"cond must be a TextCond from encode_text, got {type(cond)}")
    if len(cond) == 1 and batch > 1:
        cond = TextCond(cond.emb.expand(batch, -1, -1), cond.mask.expand(batch, -1))
    if len(cond) != batch:
        raise ValueError(f"cond has {len(cond)} prompts for a batch of {batch}")
    return cond.to(device, dtype)
