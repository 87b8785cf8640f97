"""Causal 3D-conv video VAE: pixels [B, 3, 4n+1, H, W] <-> latents [B, C, n+1, H/8, W/8].

Stride is (4, 8, 8) in (time, height, width). The first pixel frame has a latent frame of its
own and every following group of 4 frames shares one (as in Wan and CogVideoX), so a still
image is a 1-frame video. Nothing mixes time except causal convolutions (front padding only)
and there is no GroupNorm, so latent frame i depends only on pixel frames <= 4i and a decoded
frame depends only on its own and earlier latent frames. That bounded look-back
(`decoder_context`) is what lets a pool decode one long video in parallel chunks.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from model.config import ModelConfig

__all__ = ["CausalVideoVAE"]


class RMSNorm(nn.Module):
    """Per-position channel RMS norm: normalises over channels only, so it never mixes time."""

    def __init__(self, channels: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.gain = nn.Parameter(torch.ones(channels))

    def forward(self, x: Tensor) -> Tensor:
        # float32 so bf16/fp16 activations do not lose the mean square.
        h = x.float()
        h = h * torch.rsqrt(h.pow(2).mean(dim=1, keepdim=True) + self.eps)
        return (h * self.gain.float().view(1, -1, 1, 1, 1)).type_as(x)  # (B, C, T, H, W)

    def first_input_frame(self, t: int) -> int:
        """Earliest input frame that output frame t reads (no temporal mixing)."""
        return t


class CausalConv3d(nn.Conv3d):
    """Conv3d that pads time only at the front (kernel_t - 1 zeros) and space symmetrically."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        kernel: int | tuple[int, int, int] = 3,
        stride: int | tuple[int, int, int] = 1,
    ) -> None:
        kernel = (kernel,) * 3 if isinstance(kernel, int) else kernel
        stride = (stride,) * 3 if isinstance(stride, int) else stride
        super().__init__(c_in, c_out, kernel, stride=stride, padding=0)
        kt, kh, kw = kernel
        # F.pad order is (w_left, w_right, h_top, h_bottom, t_front, t_back).
        self._pad = (kw // 2, kw // 2, kh // 2, kh // 2, kt - 1, 0)

    def forward(self, x: Tensor) -> Tensor:
        return super().forward(F.pad(x, self._pad))

    def first_input_frame(self, t: int) -> int:
        """Earliest input frame that output frame t reads: frames s*t - (k-1) .. s*t."""
        return self.stride[0] * t - (self.kernel_size[0] - 1)


class ResBlock(nn.Module):
    """norm -> SiLU -> causal conv -> norm -> SiLU -> causal conv, plus a skip."""

    def __init__(self, c_in: int, c_out: int, eps: float) -> None:
        super().__init__()
        self.norm1 = RMSNorm(c_in, eps)
        self.conv1 = CausalConv3d(c_in, c_out, 3)
        self.norm2 = RMSNorm(c_out, eps)
        self.conv2 = CausalConv3d(c_out, c_out, 3)
        # A 1x1x1 conv only where the width changes; otherwise the skip is the identity.
        self.skip = CausalConv3d(c_in, c_out, 1) if c_in != c_out else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h

    def first_input_frame(self, t: int) -> int:
        """Earliest input frame that output frame t reads (the skip reads only frame t)."""
        return self.conv1.first_input_frame(self.conv2.first_input_frame(t))


class Upsample(nn.Module):
    """Nearest x2 in space then a causal conv; with `temporal`, also 1+m -> 1+2m frames."""

    def __init__(self, c_in: int, c_out: int, temporal: bool) -> None:
        super().__init__()
        self.temporal = temporal
        self.c_out = c_out
        # The temporal variant predicts both output frames of a low-rate frame at once.
        self.conv = CausalConv3d(c_in, c_out * (2 if temporal else 1), 3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.interpolate(x, scale_factor=(1.0, 2.0, 2.0), mode="nearest")  # (B, C, T, 2H, 2W)
        y = self.conv(x)
        if not self.temporal:
            return y
        B, _, T, H, W = y.shape
        # Channel half r of low frame j becomes frame 2j + r: interleave the halves in time.
        y = y.view(B, 2, self.c_out, T, H, W)  # (B, 2, C, T, H, W)
        y = y.permute(0, 2, 3, 1, 4, 5)  # (B, C, T, 2, H, W)
        y = y.reshape(B, self.c_out, 2 * T, H, W)  # (B, C, 2T, H, W)
        # Frame 0 stands alone, so its first half has no pixel frame: 2(m+1) - 1 = 1+2m frames.
        return y[:, :, 1:]  # (B, C, 2T-1, H, W)

    def first_input_frame(self, t: int) -> int:
        """Earliest input frame that output frame t needs, counting frames the chunk must hold.

        Output frame t comes from low frame (t+1)//2. A chunk that starts at low frame f only
        produces output frames >= 2f (the dropped first frame is 2f-1), so frame t also needs
        f <= t//2, which is the tighter rule when t is odd.
        """
        if not self.temporal:
            return self.conv.first_input_frame(t)
        return min(t // 2, self.conv.first_input_frame((t + 1) // 2))


def _blocks(c: int, n: int, eps: float) -> list[nn.Module]:
    """n residual blocks of width c."""
    return [ResBlock(c, c, eps) for _ in range(n)]


class CausalVideoVAE(nn.Module):
    """Causal video VAE with stride (4, 8, 8); see the module docstring for the contract."""

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        c0, c1, c2, c3 = config.vae_channels
        n, eps, lc = config.vae_blocks, config.eps, config.latent_channels
        self.latent_channels = lc

        # Encoder: time rate 1 -> 1/2 -> 1/4 over the two t+s downsamples.
        self.enc_in = CausalConv3d(3, c0, 3)
        self.encoder = nn.Sequential(
            *_blocks(c0, n, eps),
            CausalConv3d(c0, c1, 3, stride=(2, 2, 2)),
            *_blocks(c1, n, eps),
            CausalConv3d(c1, c2, 3, stride=(2, 2, 2)),
            *_blocks(c2, n, eps),
            CausalConv3d(c2, c3, 3, stride=(1, 2, 2)),
            *_blocks(c3, n, eps),  # mid
        )
        self.enc_norm = RMSNorm(c3, eps)
        self.enc_out = CausalConv3d(c3, 2 * lc, 3)

        # Decoder mirrors the encoder.
        self.dec_in = CausalConv3d(lc, c3, 3)
        self.decoder = nn.Sequential(
            *_blocks(c3, n, eps),  # mid
            Upsample(c3, c2, temporal=False),
            *_blocks(c2, n, eps),
            Upsample(c2, c1, temporal=True),
            *_blocks(c1, n, eps),
            Upsample(c1, c0, temporal=True),
            *_blocks(c0, n, eps),
        )
        self.dec_norm = RMSNorm(c0, eps)
        self.dec_out = CausalConv3d(c0, 3, 3)

        self._init_weights()

    def _init_weights(self) -> None:
        """Fan-in normal convs, zero biases, unit norm gains: deterministic under manual_seed."""
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                fan_in = m.weight[0].numel()
                nn.init.normal_(m.weight, std=fan_in**-0.5)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, RMSNorm):
                nn.init.ones_(m.gain)

    # --- validation -----------------------------------------------------------------

    def _check_video(self, video: Tensor) -> None:
        if video.ndim != 5 or video.shape[1] != 3:
            raise ValueError(f"video must be 5-D [B, 3, F, H, W] (got shape {list(video.shape)})")
        if not video.is_floating_point():
            raise ValueError(f"video must be floating point (got {video.dtype})")
        F_, H, W = video.shape[2:]
        if F_ % 4 != 1:
            raise ValueError(f"frames must be 4n+1 (got {F_})")
        if H % 8 or W % 8:
            raise ValueError(f"height and width must be multiples of 8 (got {H}x{W})")

    def _check_latent(self, z: Tensor) -> None:
        if z.ndim != 5:
            raise ValueError(f"z must be 5-D [B, C, T, H, W] (got shape {list(z.shape)})")
        if z.shape[1] != self.latent_channels:
            raise ValueError(
                f"z must have latent_channels={self.latent_channels} channels (got {z.shape[1]})"
            )
        if not z.is_floating_point():
            raise ValueError(f"z must be floating point (got {z.dtype})")

    # --- encoder --------------------------------------------------------------------

    def encode_dist(self, video: Tensor) -> tuple[Tensor, Tensor]:
        """Posterior (mean, logvar), each [B, latent_channels, n+1, H/8, W/8], of a video."""
        self._check_video(video)
        h = self.encoder(self.enc_in(video))
        h = self.enc_out(F.silu(self.enc_norm(h)))  # (B, 2C, n+1, H/8, W/8)
        mean, logvar = h.chunk(2, dim=1)
        # Clamped so exp(logvar) neither overflows nor collapses to exactly zero.
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, video: Tensor) -> Tensor:
        """The latent the diffusion model works on: the posterior mean."""
        return self.encode_dist(video)[0]

    # --- decoder --------------------------------------------------------------------

    def decode(self, z: Tensor) -> Tensor:
        """Video [B, 3, 4(T-1)+1, 8H, 8W] (not clamped) of latents [B, C, T, H, W]."""
        self._check_latent(z)
        h = self.decoder(self.dec_in(z))
        return self.dec_out(F.silu(self.dec_norm(h)))

    @property
    def decoder_context(self) -> int:
        """How many preceding latent frames a decoded frame can depend on.

        Walks the decoder backwards from the first pixel frame of latent s (frame 4s-3) to the
        earliest latent frame it needs. Every step is shift-equivariant (latent s -> s+1 moves
        every rate's index by a whole number of frames), so one s gives the answer for all.
        """
        s = 1
        t = 4 * s - 3
        t = self.dec_out.first_input_frame(t)  # norm and SiLU are per frame
        for layer in reversed(self.decoder):
            t = layer.first_input_frame(t)
        t = self.dec_in.first_input_frame(t)
        return s - t

    def decode_chunk(self, z: Tensor, start: int, stop: int) -> Tensor:
        """Pixel frames of latent frames [start, stop), decoding only them and their context.

        Latent 0 owns frame 0 and latent i >= 1 owns frames 4i-3..4i, so the result has
        4(stop-start) frames, or 4stop-3 when start is 0.
        """
        self._check_latent(z)
        T = z.shape[2]
        if not 0 <= start < stop <= T:
            raise ValueError(f"need 0 <= start < stop <= T (got start={start}, stop={stop}, T={T})")
        lo = max(0, start - self.decoder_context)
        video = self.decode(z[:, :, lo:stop])  # (B, 3, 4(stop-lo)-3, 8H, 8W)
        # Context latents lo..start-1 decoded to 1 + 4(start-lo-1) frames: drop them.
        drop = 4 * (start - lo) - 3 if start > lo else 0
        return video[:, :, drop:]

    def decode_chunked(self, z: Tensor, chunk: int) -> Tensor:
        """Same as decode(z), computed `chunk` latent frames at a time (each chunk independent)."""
        if chunk < 1:
            raise ValueError(f"chunk must be >= 1 (got {chunk})")
        self._check_latent(z)
        T = z.shape[2]
        parts = [self.decode_chunk(z, i, min(i + chunk, T)) for i in range(0, T, chunk)]
        return torch.cat(parts, dim=2)  # (B, 3, 4(T-1)+1, 8H, 8W)
