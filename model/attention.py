"""Attention backends: one function per backend, one keyword signature.

Every backend computes softmax(q kᵀ / √d) v over tensors laid out as
`[B, L, H, D]` (batch, sequence, heads, head dim), with two optional ways to say which
keys a query may see:

- `kv_mask [B, Lk]` (bool, True = real token): key padding, e.g. padded text prompts.
- `q_seqlens` / `kv_seqlens` (lists of ints, B must be 1): the sequence is a *pack* of
  independent segments, and segment i's queries see only segment i's keys (a
  block-diagonal mask). This is how a Renderer batches clips of different shapes
  (9:16, 1:1, 16:9) into one forward without padding.

Backends:
- `math`: the reference, a dense masked softmax in float32.
- `sdpa`: torch's scaled_dot_product_attention; packed segments are run one by one, so no
  dense L x L mask is ever built.
- `xformers`: memory-efficient attention with xformers' `BlockDiagonalMask`; CUDA only
  (xformers has no CPU kernels).

Selection: the explicit `backend=` argument, then the `FARM_ATTENTION` env var, then the
best available (`xformers` on CUDA tensors when installed, else `sdpa`). Asking for
`xformers` where it cannot run (CPU tensors, not installed) warns once and uses `sdpa`.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

ENV_VAR = "FARM_ATTENTION"


@functools.cache
def _xformers_ops():
    """The `xformers.ops` module, or None when xformers is not installed or broken."""
    try:
        import xformers.ops as xops
    except Exception:  # ImportError, or a build that does not match this torch
        return None
    return xops


def xformers_available() -> bool:
    """Whether the xformers backend can run (installed and CUDA present)."""
    return _xformers_ops() is not None and torch.cuda.is_available()


def _check(q: Tensor, k: Tensor, v: Tensor, q_seqlens, kv_seqlens, kv_mask) -> None:
    if q.ndim != 4 or k.ndim != 4 or v.ndim != 4:
        raise ValueError("attention expects q, k, v of shape [B, L, H, D]")
    if k.shape != v.shape or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"attention shapes do not match: q {q.shape}, k {k.shape}, v {v.shape}")
    if (q_seqlens is None) != (kv_seqlens is None):
        raise ValueError("q_seqlens and kv_seqlens must be given together")
    if q_seqlens is not None:
        if q.shape[0] != 1:
            raise ValueError("packed attention (seqlens) needs batch size 1")
        if len(q_seqlens) != len(kv_seqlens):
            raise ValueError("q_seqlens and kv_seqlens must have one entry per segment")
        if sum(q_seqlens) != q.shape[1] or sum(kv_seqlens) != k.shape[1]:
            raise ValueError("seqlens must add up to the packed sequence lengths")
        if kv_mask is not None:
            raise ValueError("give either kv_mask or seqlens, not both")
    if kv_mask is not None and kv_mask.shape != (k.shape[0], k.shape[1]):
        raise ValueError(f"kv_mask must be [B, Lk] = {tuple(k.shape[:2])}, got {kv_mask.shape}")


def _dense_mask(q: Tensor, k: Tensor, q_seqlens, kv_seqlens, kv_mask) -> Tensor | None:
    """A boolean [B, 1, Lq, Lk] mask (True = may attend) for the math reference."""
    if q_seqlens is not None:
        q_ids = torch.repeat_interleave(torch.arange(len(q_seqlens)), torch.tensor(q_seqlens))
        k_ids = torch.repeat_interleave(torch.arange(len(kv_seqlens)), torch.tensor(kv_seqlens))
        mask = q_ids[:, None] == k_ids[None, :]  # (Lq, Lk)
        return mask.to(q.device)[None, None]
    if kv_mask is not None:
        return kv_mask[:, None, None, :]  # (B, 1, 1, Lk)
    return None


def math_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_seqlens: Sequence[int] | None = None,
    kv_seqlens: Sequence[int] | None = None,
    kv_mask: Tensor | None = None,
) -> Tensor:
    """Reference attention: explicit float32 softmax with a dense mask."""
    _check(q, k, v, q_seqlens, kv_seqlens, kv_mask)
    scale = q.shape[-1] ** -0.5
    qf, kf, vf = (x.float().transpose(1, 2) for x in (q, k, v))  # (B, H, L, D)
    scores = (qf @ kf.transpose(-1, -2)) * scale  # (B, H, Lq, Lk)
    mask = _dense_mask(q, k, q_seqlens, kv_seqlens, kv_mask)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = scores.softmax(dim=-1) @ vf  # (B, H, Lq, D)
    return out.transpose(1, 2).type_as(q)  # (B, Lq, H, D)


def sdpa_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_seqlens: Sequence[int] | None = None,
    kv_seqlens: Sequence[int] | None = None,
    kv_mask: Tensor | None = None,
) -> Tensor:
    """torch SDPA; packed segments run one at a time (no dense L x L mask)."""
    _check(q, k, v, q_seqlens, kv_seqlens, kv_mask)
    if q_seqlens is not None:
        outs = [
            _sdpa(qs, ks, vs, None)
            for qs, ks, vs in zip(
                q.split(list(q_seqlens), dim=1),
                k.split(list(kv_seqlens), dim=1),
                v.split(list(kv_seqlens), dim=1),
                strict=True,
            )
        ]
        return torch.cat(outs, dim=1)
    mask = None if kv_mask is None else kv_mask[:, None, None, :]  # (B, 1, 1, Lk)
    return _sdpa(q, k, v, mask)


def _sdpa(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None) -> Tensor:
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask
    )  # (B, H, L, D)
    return out.transpose(1, 2)  # (B, L, H, D)


def xformers_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_seqlens: Sequence[int] | None = None,
    kv_seqlens: Sequence[int] | None = None,
    kv_mask: Tensor | None = None,
) -> Tensor:
    """xformers memory-efficient attention; padding and packs become a BlockDiagonalMask."""
    _check(q, k, v, q_seqlens, kv_seqlens, kv_mask)
    xops = _xformers_ops()
    if xops is None or not q.is_cuda:
        raise RuntimeError("the xformers backend needs xformers installed and CUDA tensors")
    B, Lq = q.shape[:2]
    if q_seqlens is None and kv_mask is None:
        return xops.memory_efficient_attention(q, k, v)
    if q_seqlens is None:
        # Key padding → a pack: batch row b becomes segment b with only its real keys.
        q_seqlens = [Lq] * B
        kv_seqlens = kv_mask.sum(dim=1).tolist()
        keep = kv_mask.reshape(-1)
        q = q.reshape(1, B * Lq, *q.shape[2:])  # (1, B*Lq, H, D)
        k = k.reshape(1, -1, *k.shape[2:])[:, keep]  # (1, sum kv, H, D)
        v = v.reshape(1, -1, *v.shape[2:])[:, keep]
    bias = xops.fmha.BlockDiagonalMask.from_seqlens(list(q_seqlens), list(kv_seqlens))
    out = xops.memory_efficient_attention(q, k, v, attn_bias=bias)  # (1, sum q, H, D)
    return out.reshape(B, Lq, *out.shape[2:])


BACKENDS: dict[str, Callable[..., Tensor]] = {
    "math": math_attention,
    "sdpa": sdpa_attention,
    "xformers": xformers_attention,
}


def select_backend(backend: str | None = None, device: torch.device | None = None) -> str:
    """Name of the backend to use: explicit argument, then $FARM_ATTENTION, then best."""
    name = backend or os.environ.get(ENV_VAR) or None
    on_cuda = device is not None and torch.device(device).type == "cuda"
    if name is None:
        return "xformers" if on_cuda and xformers_available() else "sdpa"
    if name not in BACKENDS:
        raise ValueError(f"unknown attention backend {name!r}; known: {sorted(BACKENDS)}")
    if name == "xformers" and not (on_cuda and xformers_available()):
        # xformers has no CPU kernels: asking for it on a CPU box must still render.
        _warn_fallback(str(device))
        return "sdpa"
    return name


@functools.cache
def _warn_fallback(device: str) -> None:
    warnings.warn(
        f"xformers attention is unavailable on device {device!r}; falling back to sdpa",
        RuntimeWarning,
        stacklevel=3,
    )


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    *,
    q_seqlens: Sequence[int] | None = None,
    kv_seqlens: Sequence[int] | None = None,
    kv_mask: Tensor | None = None,
    backend: str | None = None,
) -> Tensor:
    """Attention through the selected backend (see the module docstring)."""
    fn = BACKENDS[select_backend(backend, q.device)]
    return fn(q, k, v, q_seqlens=q_seqlens, kv_seqlens=kv_seqlens, kv_mask=kv_mask)
