"""Attention backends agree with the reference, and packing equals running alone."""

import warnings

import pytest
import torch

from model import attention as attn


def qkv(B=2, Lq=37, Lk=37, H=3, D=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(B, L, H, D, generator=g) for L in (Lq, Lk, Lk))


@pytest.mark.parametrize("shape", [(2, 37, 37), (1, 64, 9), (3, 5, 120)])
def test_sdpa_matches_math(shape):
    B, Lq, Lk = shape
    q, k, v = qkv(B, Lq, Lk)
    ref = attn.math_attention(q, k, v)
    assert (attn.sdpa_attention(q, k, v) - ref).abs().max() <= 1e-5


def test_sdpa_matches_math_with_key_padding():
    q, k, v = qkv(B=3, Lq=20, Lk=11)
    mask = torch.ones(3, 11, dtype=torch.bool)
    mask[0, 4:] = False
    mask[2, 1:] = False
    ref = attn.math_attention(q, k, v, kv_mask=mask)
    out = attn.sdpa_attention(q, k, v, kv_mask=mask)
    assert (out - ref).abs().max() <= 1e-5
    # Padded keys really are ignored: changing them changes nothing.
    k2, v2 = k.clone(), v.clone()
    k2[0, 4:] += 5.0
    v2[0, 4:] -= 3.0
    assert (attn.sdpa_attention(q, k2, v2, kv_mask=mask) - out).abs().max() <= 1e-6


@pytest.mark.parametrize("backend", ["math", "sdpa"])
def test_packed_equals_separate(backend):
    fn = attn.BACKENDS[backend]
    q_lens, kv_lens = [12, 40, 7], [5, 9, 3]
    parts = [
        list(qkv(1, lq, lk, seed=i)) for i, (lq, lk) in enumerate(zip(q_lens, kv_lens, strict=True))
    ]
    separate = [fn(q, k, v) for q, k, v in parts]
    q, k, v = (torch.cat([p[i] for p in parts], dim=1) for i in range(3))
    packed = fn(q, k, v, q_seqlens=q_lens, kv_seqlens=kv_lens)
    assert (packed - torch.cat(separate, dim=1)).abs().max() <= 1e-5


def test_packed_segments_do_not_leak():
    q, k, v = qkv(1, 30, 30)
    out = attn.sdpa_attention(q, k, v, q_seqlens=[10, 20], kv_seqlens=[10, 20])
    v2 = v.clone()
    v2[:, 10:] += 1.0  # change only the second segment's values
    out2 = attn.sdpa_attention(q, k, v2, q_seqlens=[10, 20], kv_seqlens=[10, 20])
    assert torch.equal(out[:, :10], out2[:, :10])
    assert not torch.allclose(out[:, 10:], out2[:, 10:])


def test_selection_order(monkeypatch):
    monkeypatch.delenv(attn.ENV_VAR, raising=False)
    assert attn.select_backend(None, torch.device("cpu")) == "sdpa"
    monkeypatch.setenv(attn.ENV_VAR, "math")
    assert attn.select_backend(None, torch.device("cpu")) == "math"
    assert attn.select_backend("sdpa", torch.device("cpu")) == "sdpa"  # explicit wins
    monkeypatch.setenv(attn.ENV_VAR, "flash9")
    with pytest.raises(ValueError, match="unknown attention backend 'flash9'"):
        attn.select_backend(None, torch.device("cpu"))


def test_xformers_falls_back_to_sdpa_on_cpu():
    q, k, v = qkv(1, 16, 16)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        assert attn.select_backend("xformers", torch.device("cpu")) == "sdpa"
        out = attn.attention(q, k, v, backend="xformers")
    assert (out - attn.math_attention(q, k, v)).abs().max() <= 1e-5
    with pytest.raises(RuntimeError, match="needs xformers installed and CUDA"):
        attn.xformers_attention(q, k, v)


@pytest.mark.skipif(not attn.xformers_available(), reason="xformers runs on CUDA only")
def test_xformers_matches_math_on_cuda():
    q, k, v = (x.cuda() for x in qkv(1, 52, 52))
    lens = [20, 32]
    ref = attn.math_attention(q, k, v, q_seqlens=lens, kv_seqlens=lens)
    out = attn.xformers_attention(q, k, v, q_seqlens=lens, kv_seqlens=lens)
    assert (out - ref).abs().max() <= 1e-3


def test_bad_shapes_are_named():
    q, k, v = qkv(2, 8, 8)
    with pytest.raises(ValueError, match="batch size 1"):
        attn.sdpa_attention(q, k, v, q_seqlens=[4, 4], kv_seqlens=[4, 4])
    with pytest.raises(ValueError, match="add up"):
        attn.sdpa_attention(q[:1], k[:1], v[:1], q_seqlens=[4, 3], kv_seqlens=[4, 4])
    with pytest.raises(ValueError, match=r"\[B, L, H, D\]"):
        attn.sdpa_attention(q[0], k[0], v[0])
