"""Tests of the causal video VAE: shapes, causality, chunked decoding, validation, presets."""

from __future__ import annotations

import pytest
import torch

from model.config import PRESETS
from model.vae import CausalVideoVAE

TINY = PRESETS["tiny"]
C = TINY.latent_channels


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    """Run single-threaded: the tensors are tiny and thread hand-offs dominate on 2 busy cores."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vae() -> CausalVideoVAE:
    torch.manual_seed(0)
    return CausalVideoVAE(TINY).eval()


def _video(frames: int, h: int, w: int, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(1, 3, frames, h, w, generator=g) * 2 - 1


def _latent(t: int, h: int = 2, w: int = 2, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, C, t, h, w, generator=g)


def _pixel_slice(start: int, stop: int) -> slice:
    """Pixel frames of latent frames [start, stop): frame 0 for latent 0, 4i-3..4i for i >= 1."""
    return slice(0 if start == 0 else 4 * start - 3, 4 * stop - 3)


# --- shapes -----------------------------------------------------------------------------


@torch.no_grad()
def test_shapes_9_frames(vae: CausalVideoVAE) -> None:
    video = _video(9, 64, 64)
    mean, logvar = vae.encode_dist(video)
    assert mean.shape == logvar.shape == (1, C, 3, 8, 8)
    assert torch.equal(vae.encode(video), mean)
    assert vae.decode(mean).shape == (1, 3, 9, 64, 64)


@torch.no_grad()
def test_single_frame(vae: CausalVideoVAE) -> None:
    z = vae.encode(_video(1, 16, 16))
    assert z.shape == (1, C, 1, 2, 2)
    assert vae.decode(z).shape == (1, 3, 1, 16, 16)


@torch.no_grad()
def test_non_square(vae: CausalVideoVAE) -> None:
    z = vae.encode(_video(5, 16, 32))
    assert z.shape == (1, C, 2, 2, 4)
    assert vae.decode(z).shape == (1, 3, 5, 16, 32)


@torch.no_grad()
def test_logvar_is_clamped() -> None:
    torch.manual_seed(0)
    model = CausalVideoVAE(TINY).eval()
    model.enc_out.bias.data[C:] = 1e4  # drive logvar far above the clamp
    _, logvar = model.encode_dist(_video(1, 8, 8))
    assert logvar.max().item() == 20.0


# --- causality --------------------------------------------------------------------------


@torch.no_grad()
@pytest.mark.parametrize("k", [0, 3, 4, 7, 8, 12])
def test_encoder_is_causal(vae: CausalVideoVAE, k: int) -> None:
    video = _video(17, 16, 16)
    changed = video.clone()
    changed[:, :, k + 1 :] = _video(16 - k, 16, 16, seed=99)
    a, b = vae.encode(video), vae.encode(changed)
    kept = k // 4 + 1  # latent frames i with 4i <= k
    assert (a[:, :, :kept] - b[:, :, :kept]).abs().max() <= 1e-6
    assert (a[:, :, kept:] - b[:, :, kept:]).abs().max() > 1e-3


@torch.no_grad()
@pytest.mark.parametrize("j", [0, 1, 3, 5])
def test_decoder_is_causal(vae: CausalVideoVAE, j: int) -> None:
    z = _latent(7)
    changed = z.clone()
    changed[:, :, j + 1 :] = _latent(6 - j, seed=99)
    a, b = vae.decode(z), vae.decode(changed)
    kept = 4 * j + 1  # pixel frames 0..4j belong to latents <= j
    assert (a[:, :, :kept] - b[:, :, :kept]).abs().max() <= 1e-6
    assert (a[:, :, kept:] - b[:, :, kept:]).abs().max() > 1e-3


# --- chunked decoding -------------------------------------------------------------------


@pytest.fixture(scope="module")
def long_latent(vae: CausalVideoVAE) -> tuple[torch.Tensor, torch.Tensor]:
    """A latent longer than the decoder context (so chunks really drop context) and its decode."""
    z = _latent(vae.decoder_context + 8)
    with torch.no_grad():
        return z, vae.decode(z)


def test_decoder_context_is_positive(vae: CausalVideoVAE) -> None:
    # Latent s > 0 owns 4 frames, so at least latent s-1 must be decoded with it.
    assert isinstance(vae.decoder_context, int)
    assert vae.decoder_context >= 1


@torch.no_grad()
@pytest.mark.parametrize("chunk", [1, 2, 3, 5])
def test_decode_chunked_equals_decode(vae: CausalVideoVAE, long_latent, chunk: int) -> None:
    z, full = long_latent
    out = vae.decode_chunked(z, chunk)
    assert out.shape == full.shape
    assert (out - full).abs().max() <= 1e-5


@torch.no_grad()
@pytest.mark.parametrize("start,stop", [(0, 1), (0, 4), (1, 2), (6, 9), (-7, 0), (-1, 0)])
def test_decode_chunk_range(vae: CausalVideoVAE, long_latent, start: int, stop: int) -> None:
    z, full = long_latent
    T = z.shape[2]
    if stop <= 0:  # counted from the end, past the decoder context
        start, stop = T + start, T + stop
    out = vae.decode_chunk(z, start, stop)
    expected = full[:, :, _pixel_slice(start, stop)]
    assert out.shape[2] == (4 * stop - 3 if start == 0 else 4 * (stop - start))
    assert out.shape == expected.shape
    assert (out - expected).abs().max() <= 1e-5


@torch.no_grad()
def test_context_is_needed(vae: CausalVideoVAE, long_latent) -> None:
    z, full = long_latent
    ctx = vae.decoder_context
    start, stop = ctx + 2, ctx + 5
    # No context: latent `start` is decoded as if it were a first frame.
    alone = vae.decode(z[:, :, start:stop])  # global frames 4start .. 4stop-4
    assert (alone - full[:, :, 4 * start : 4 * stop - 3]).abs().max() > 1e-3
    # One latent of context fewer than decoder_context already changes the chunk: the bound
    # is tight, so the equality tests above exercise it.
    lo = start - (ctx - 1)
    short = vae.decode(z[:, :, lo:stop])[:, :, 4 * (start - lo) - 3 :]
    assert short.shape == full[:, :, _pixel_slice(start, stop)].shape
    assert (short - full[:, :, _pixel_slice(start, stop)]).abs().max() > 1e-4


# --- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "video,match",
    [
        (torch.zeros(1, 3, 10, 16, 16), r"frames must be 4n\+1 \(got 10\)"),
        (torch.zeros(1, 3, 9, 60, 64), "multiples of 8"),
        (torch.zeros(1, 3, 9, 64, 60), "multiples of 8"),
        (torch.zeros(3, 9, 16, 16), "5-D"),
        (torch.zeros(1, 4, 9, 16, 16), r"\[B, 3, F, H, W\]"),
        (torch.zeros(1, 3, 9, 16, 16, dtype=torch.uint8), "floating point"),
    ],
)
def test_bad_video(vae: CausalVideoVAE, video: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vae.encode(video)


@pytest.mark.parametrize(
    "z,match",
    [
        (torch.zeros(1, C + 1, 3, 2, 2), f"latent_channels={C}"),
        (torch.zeros(C, 3, 2, 2), "5-D"),
        (torch.zeros(1, C, 3, 2, 2, dtype=torch.long), "floating point"),
    ],
)
def test_bad_latent(vae: CausalVideoVAE, z: torch.Tensor, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        vae.decode(z)
    with pytest.raises(ValueError, match=match):
        vae.decode_chunk(z, 0, 1)


@pytest.mark.parametrize("start,stop", [(-1, 2), (2, 2), (3, 1), (0, 4)])
def test_bad_chunk_range(vae: CausalVideoVAE, start: int, stop: int) -> None:
    with pytest.raises(ValueError, match="0 <= start < stop <= T"):
        vae.decode_chunk(_latent(3), start, stop)


def test_bad_chunk_size(vae: CausalVideoVAE) -> None:
    with pytest.raises(ValueError, match="chunk must be >= 1"):
        vae.decode_chunked(_latent(3), 0)


# --- construction -----------------------------------------------------------------------


def test_init_is_deterministic() -> None:
    torch.manual_seed(5)
    a = CausalVideoVAE(TINY).state_dict()
    torch.manual_seed(5)
    b = CausalVideoVAE(TINY).state_dict()
    torch.manual_seed(6)
    c = CausalVideoVAE(TINY).state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["enc_in.weight"], c["enc_in.weight"])


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_build_on_meta(name: str) -> None:
    with torch.device("meta"):
        model = CausalVideoVAE(PRESETS[name])
    assert sum(p.numel() for p in model.parameters()) > 0
    assert model.decoder_context >= 1
